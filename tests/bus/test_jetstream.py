"""The JetStream bus against a real nats-server -js: the contract, redelivery, dead letters,
de-duplication of retries only, restarts and crashes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid

import pytest

from task.apps.nop import NopWorker
from task.bus.base import Consumer, Producer
from task.bus.jetstream import (
    JetStreamConsumer,
    JetStreamMessage,
    JetStreamOptions,
    JetStreamProducer,
    stream_name,
)
from task.errors import BusError, ConfigError
from task.launcher import Launcher, LauncherOptions
from task.task import Task
from tests.bus.contract import BusContract
from tests.servers.nats import NatsServer, NatsServerFactory
from tests.servers.ports import free_port

pytestmark = pytest.mark.jetstream


def js_url(server: NatsServer, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"jetstream://{server.hostport}" + (f"?{query}" if query else "")


class TestJetStreamBus(BusContract):
    @pytest.fixture(autouse=True)
    def _server(self, jetstream_server: NatsServer) -> None:
        self.url = js_url(jetstream_server)

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return JetStreamConsumer(JetStreamOptions.from_url(self.url), topic, "workers", prefetch)

    def producer(self) -> Producer:
        return JetStreamProducer(JetStreamOptions.from_url(self.url))


# ---------------------------------------------------------------- helpers

def task_body(i: int, info: str = "") -> bytes:
    return Task.new("nop", info, id=f"t{i}").to_json()


async def collect(url: str, topic: str, want: set[str], patience: float = 30.0) -> set[str]:
    """Ids of the done tasks on ``topic`` until ``want`` are all seen (or patience runs out)."""
    seen: set[str] = set()
    channel = "check" + uuid.uuid4().hex[:6]  # a fresh durable reads the topic from the start
    consumer = JetStreamConsumer(JetStreamOptions.from_url(url), topic, channel, prefetch=50)
    async with consumer:
        deadline = asyncio.get_running_loop().time() + patience
        while not want <= seen:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                message = await asyncio.wait_for(consumer.msg(), left)
            except TimeoutError:
                break
            assert message is not None
            seen.add(Task.from_json(message.body).id)
            await message.ack()
    return seen


async def next_message(consumer: JetStreamConsumer, patience: float = 10.0) -> JetStreamMessage:
    message = await asyncio.wait_for(consumer.msg(), patience)
    assert message is not None
    return message


def launcher(url: str, topic: str, max_in_progress: int = 5) -> Launcher:
    options = JetStreamOptions.from_url(url)
    return Launcher(
        NopWorker,
        JetStreamConsumer(options, topic, "nop", prefetch=max_in_progress),
        JetStreamProducer(options),
        LauncherOptions(max_in_progress=max_in_progress, task_type="nop", topic=topic,
                        done_topic=topic + "_done"),
    )


@pytest.fixture
def topic() -> str:
    return "t" + uuid.uuid4().hex[:10]


# ---------------------------------------------------------------- layout and options

def test_stream_names_follow_the_topic() -> None:
    assert stream_name("fetch-file") == "TASK_FETCH_FILE"
    assert stream_name("a.b c") == "TASK_A_B_C"


def test_options_come_from_the_url() -> None:
    options = JetStreamOptions.from_url(
        "jetstream://h:1?ack_wait=2m&max_deliver=3&dead_letter=dl&storage=memory&max_age=1h"
    )
    assert (options.ack_wait, options.max_deliver, options.dead_letter) == (120.0, 3, "dl")
    assert options.max_age == 3600.0 and options.storage.value == "memory"
    with pytest.raises(ConfigError, match="max_delivr"):
        JetStreamOptions.from_url("jetstream://h:1?max_delivr=3")


async def test_unreachable_server_is_one_clear_error() -> None:
    port = free_port()
    consumer = JetStreamConsumer(JetStreamOptions.from_url(f"jetstream://127.0.0.1:{port}"), "t")
    with pytest.raises(BusError, match=f"cannot connect to jetstream://127.0.0.1:{port}: .*is nats-server running"):
        await consumer.start()
    await consumer.stop()


# ---------------------------------------------------------------- delivery guarantees

async def test_a_resent_task_is_delivered_again(jetstream_server: NatsServer, topic: str) -> None:
    # Given a task sent and handled once
    url = js_url(jetstream_server)
    body = task_body(1)
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as producer, JetStreamConsumer(options, topic) as consumer:
        await producer.send(topic, body)
        await (await next_message(consumer)).ack()
        # When the very same task is sent again (retry, recover)
        await producer.send(topic, body)
        # Then it is delivered, not dropped as a duplicate
        again = await next_message(consumer)
        assert again.body == body and again.attempt == 1
        await again.ack()


async def test_nack_on_the_last_delivery_goes_to_dead_letter(jetstream_server: NatsServer, topic: str) -> None:
    url = js_url(jetstream_server, max_deliver="2", dead_letter=topic + "_dl")
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as producer, JetStreamConsumer(options, topic) as consumer:
        await producer.send(topic, b"\xff not utf-8")
        first = await next_message(consumer)
        await first.nack()
        second = await next_message(consumer)
        assert second.attempt == 2
        await second.nack()  # the last allowed delivery
        async with JetStreamConsumer(options, topic + "_dl") as dead:
            record = json.loads((await next_message(dead)).body)
        assert record["topic"] == topic and record["attempts"] == 2
        assert "last" in record["reason"] and record["body_b64"] and "body" not in record
        # and the message is terminated, not delivered a third time
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(consumer.msg(), 1.5)


async def test_a_last_delivery_never_settled_goes_to_dead_letter(jetstream_server: NatsServer, topic: str) -> None:
    # Given a worker that takes the message on its only allowed delivery and dies silently
    url = js_url(jetstream_server, max_deliver="1", ack_wait="1s", dead_letter=topic + "_dl")
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as producer, JetStreamConsumer(options, topic) as consumer:
        await producer.send(topic, b'{"type":"nop","info":"poison"}')
        await next_message(consumer)  # never settled
        # Then, once ack_wait passes, the server's advisory puts it in the dead-letter topic
        async with JetStreamConsumer(options, topic + "_dl") as dead:
            record = json.loads((await next_message(dead, patience=15)).body)
    assert record["reason"] == "max deliveries reached"
    assert record["body"] == '{"type":"nop","info":"poison"}' and record["attempts"] == 1


async def test_stop_returns_prefetched_messages_at_once(jetstream_server: NatsServer, topic: str) -> None:
    options = JetStreamOptions.from_url(js_url(jetstream_server))
    async with JetStreamProducer(options) as producer:
        for i in range(5):
            await producer.send(topic, task_body(i))
    first = JetStreamConsumer(options, topic, "w", prefetch=5)
    taken = await next_message(first)
    await asyncio.sleep(0.3)  # the other four are prefetched by now
    await first.stop()  # stays open for the one handed out...
    await taken.ack()  # ...which is still acknowledged
    async with JetStreamConsumer(options, topic, "w", prefetch=5) as second:
        # the ack_wait is 30 s: only NAK(0) on stop makes these arrive now
        messages = [await next_message(second, patience=5) for _ in range(4)]
        ids = {Task.from_json(message.body).id for message in messages}
    assert ids == {"t1", "t2", "t3", "t4"}


# ---------------------------------------------------------------- faults

@pytest.mark.faults
async def test_tasks_of_a_killed_worker_are_redelivered_and_done(
    jetstream_server: NatsServer, topic: str
) -> None:
    # Given 20 slow tasks and a worker process that runs 4 at a time (5 s of work: a loaded
    # machine still kills it with tasks in hand, where 1 s of work could all be done by then)
    url = js_url(jetstream_server, ack_wait="2s")
    async with JetStreamProducer(JetStreamOptions.from_url(url)) as producer:
        for i in range(20):
            await producer.send(topic, task_body(i, "sleep=1s"))
    worker = subprocess.Popen(  # noqa: ASYNC220 - a quick spawn in a test
        [sys.executable, "-m", "task.cli", "worker", "nop", "--bus", url, "--topic", topic,
         "--channel", "nop", "--done-topic", topic + "_done", "--max-in-progress", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # When it is killed with SIGKILL while tasks run
        seen = await collect(url, topic + "_done", {"t0", "t1", "t2"}, patience=20)
        assert len(seen) >= 3, "the worker process did not start working"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    # Then another worker gets what the dead one held (after ack_wait) and every task is done
    survivor = launcher(url, topic, max_in_progress=4)
    running = asyncio.create_task(survivor.run())
    try:
        done = await collect(url, topic + "_done", {f"t{i}" for i in range(20)}, patience=30)
    finally:
        await survivor.stop()
        await running
    assert done == {f"t{i}" for i in range(20)}
    assert survivor.stats()["tasks_redelivered"] >= 1


@pytest.mark.faults
async def test_a_server_restart_loses_nothing_acknowledged(
    nats_servers: NatsServerFactory, topic: str
) -> None:
    # Given a JetStream server with its own storage and a worker busy with 60 tasks
    server = nats_servers(jetstream=True)
    url = js_url(server, reconnect_wait="0.2s")
    async with JetStreamProducer(JetStreamOptions.from_url(url)) as producer:
        for i in range(60):
            await producer.send(topic, task_body(i, "sleep=150ms"))
    worker = launcher(url, topic, max_in_progress=5)
    running = asyncio.create_task(worker.run())
    try:
        while worker.stats()["tasks_finished"] < 5:  # type: ignore[operator]
            await asyncio.sleep(0.05)
        # When the server restarts on the same port and storage mid-run
        await asyncio.to_thread(server.restart)
        assert worker.stats()["tasks_finished"] < 60, "the run ended before the restart"  # type: ignore[operator]
        # Then the worker keeps going and every task ends up done
        done = await collect(url, topic + "_done", {f"t{i}" for i in range(60)}, patience=40)
    finally:
        await worker.stop()
        await running
    assert done == {f"t{i}" for i in range(60)}
