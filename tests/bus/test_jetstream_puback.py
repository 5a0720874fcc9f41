"""The JetStream producer's own PubAck handling (task/bus/jetstream_puback.py): a task is
acknowledged only after its done task's PubAck, a lost PubAck is retried and stored once,
refusals and a vanished stream are handled as before."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg

from task.apps.nop import NopWorker
from task.bus.jetstream import JetStreamConsumer, JetStreamOptions, JetStreamProducer, stream_name
from task.bus.jetstream_puback import PubAcks
from task.errors import BusError, ConfigError
from task.launcher import Launcher, LauncherOptions
from task.task import Task
from tests.bus.test_jetstream import js_url
from tests.servers.nats import NatsServer

pytestmark = pytest.mark.jetstream

OnReply = Callable[[Msg], Awaitable[None]]


@pytest.fixture
def topic() -> str:
    return "p" + uuid.uuid4().hex[:10]


def intercept_pubacks(producer: JetStreamProducer, handler: Callable[[Msg, OnReply], Awaitable[None]]) -> None:
    """Route the producer's PubAcks through ``handler(msg, deliver)`` (before it starts)."""
    acks = producer._acks
    deliver = acks._on_reply

    async def on_reply(msg: Msg) -> None:
        await handler(msg, deliver)

    acks._on_reply = on_reply  # type: ignore[method-assign]


async def until(condition: Callable[[], Awaitable[bool]], patience: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + patience
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_task_is_acked_only_after_its_done_task_is_confirmed(
    jetstream_server: NatsServer, topic: str
) -> None:
    # Given a worker whose done tasks' PubAcks are held back
    url = js_url(jetstream_server)
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as sender:
        await sender.send(topic, Task.new("nop", "", id="t1").to_json())
    producer = JetStreamProducer(options)
    released = asyncio.Event()

    async def hold(msg: Msg, deliver: OnReply) -> None:
        await released.wait()
        await deliver(msg)

    intercept_pubacks(producer, hold)
    worker = Launcher(NopWorker, JetStreamConsumer(options, topic, "nop", prefetch=5), producer,
                      LauncherOptions(max_in_progress=5, task_type="nop", topic=topic, done_topic=topic + "_done"))
    nc = await nats.connect(f"nats://{jetstream_server.hostport}")
    js = nc.jetstream()
    running = asyncio.create_task(worker.run())
    try:
        async def done_stored() -> bool:
            try:
                return (await js.stream_info(stream_name(topic + "_done"))).state.messages == 1
            except nats.js.errors.NotFoundError:
                return False

        async def unacked() -> int:
            return (await js.consumer_info(stream_name(topic), "nop")).num_ack_pending

        # When its task ran and the done task is stored, but the PubAck has not come back
        await until(done_stored)
        # Then the task's message stays unacknowledged for as long as the PubAck is held
        for _ in range(10):
            assert await unacked() == 1
            await asyncio.sleep(0.05)
        # And once the PubAck arrives, the task is acknowledged
        released.set()
        await until(lambda: _is(unacked(), 0))
    finally:
        released.set()
        await worker.stop()
        await running
        await nc.close()
    assert worker.stats()["tasks_finished"] == 1


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


@pytest.mark.parametrize(("dedupe", "copies"), [("true", 1), ("false", 2)])
async def test_a_lost_puback_is_retried_and_the_message_stored_once_unless_dedupe_is_off(
    jetstream_server: NatsServer, topic: str, dedupe: str, copies: int
) -> None:
    # Given a producer whose first PubAck is lost on the way back
    url = js_url(jetstream_server, publish_timeout="300ms", dedupe=dedupe)
    producer = JetStreamProducer(JetStreamOptions.from_url(url))
    lost: list[Msg] = []

    async def lose_first(msg: Msg, deliver: OnReply) -> None:
        if not lost:
            lost.append(msg)
            return
        await deliver(msg)

    intercept_pubacks(producer, lose_first)
    async with producer:
        # When a task is sent
        await producer.send(topic, b'{"type":"nop"}')
        # Then the send is retried after the timeout ...
        assert len(lost) == 1 and producer.info()["retries"] >= 1
    # ... and the stream keeps one copy (the retry had the same message id), or two without ids
    nc = await nats.connect(f"nats://{jetstream_server.hostport}")
    try:
        assert (await nc.jetstream().stream_info(stream_name(topic))).state.messages == copies
    finally:
        await nc.close()


def test_dedupe_is_on_unless_the_url_turns_it_off() -> None:
    assert JetStreamOptions.from_url("jetstream://h:1").dedupe
    assert not JetStreamOptions.from_url("jetstream://h:1?dedupe=false").dedupe
    with pytest.raises(ConfigError, match="dedupe"):
        JetStreamOptions.from_url("jetstream://h:1?dedupe=maybe")


async def test_a_message_the_stream_refuses_is_one_clear_error(jetstream_server: NatsServer, topic: str) -> None:
    # Given a topic whose stream takes messages of at most 16 bytes
    options = JetStreamOptions.from_url(js_url(jetstream_server))
    async with JetStreamProducer(options) as producer:
        await producer.send(topic, b"small")
        nc = await nats.connect(f"nats://{jetstream_server.hostport}")
        try:
            js = nc.jetstream()
            config = (await js.stream_info(stream_name(topic))).config
            await js.update_stream(config.evolve(max_msg_size=16))
        finally:
            await nc.close()
        # When a bigger message is sent, then JetStream's refusal is the error, at once
        with pytest.raises(BusError, match="JetStream refused a message for .*size"):
            await producer.send(topic, b"x" * 100)
        assert producer.info()["retries"] == 0


async def test_a_deleted_stream_is_created_again(jetstream_server: NatsServer, topic: str) -> None:
    # Given a producer that has sent to a topic whose stream is then deleted
    options = JetStreamOptions.from_url(js_url(jetstream_server))
    nc = await nats.connect(f"nats://{jetstream_server.hostport}")
    try:
        async with JetStreamProducer(options) as producer:
            await producer.send(topic, b"one")
            await nc.jetstream().delete_stream(stream_name(topic))
            # When it sends again (no stream answers: a 503 status reply)
            await producer.send(topic, b"two")
        # Then the stream is back, with the new message
        assert (await nc.jetstream().stream_info(stream_name(topic))).state.messages == 1
    finally:
        await nc.close()


async def test_a_send_waiting_for_its_puback_fails_when_the_producer_stops(
    jetstream_server: NatsServer, topic: str
) -> None:
    # Given a send whose PubAck never comes
    producer = JetStreamProducer(JetStreamOptions.from_url(js_url(jetstream_server)))
    seen = asyncio.Event()

    async def drop(msg: Msg, deliver: OnReply) -> None:
        seen.set()

    intercept_pubacks(producer, drop)
    await producer.start()
    sending = asyncio.create_task(producer.send(topic, b"lost"))
    await asyncio.wait_for(seen.wait(), 10)
    # When the producer stops, then the send ends with a BusError (not a hang, not success)
    await producer.stop()
    with pytest.raises(BusError):
        await asyncio.wait_for(sending, 5)


# ---------------------------------------------------------------- reading PubAcks (no server)

class _OneSubscription:
    """Just enough of a nats-py client for ``PubAcks.start``."""

    cb: OnReply

    def new_inbox(self) -> str:
        return "_INBOX.test"

    async def subscribe(self, subject: str, cb: OnReply, pending_msgs_limit: int) -> object:
        assert subject == "_INBOX.test.*"
        self.cb = cb
        return object()


async def _reply(data: bytes, headers: dict[str, str] | None = None, timeout: float = 5.0) -> asyncio.Future[None]:
    client = _OneSubscription()
    acks = PubAcks(timeout)
    await acks.start(client)  # type: ignore[arg-type]
    subject, future = acks.expect()
    await client.cb(Msg(_client=None, subject=subject, data=data, headers=headers))  # type: ignore[arg-type]
    await acks.stop()
    return future


@pytest.mark.parametrize("data", [
    b'{"stream":"TASK_T","seq":1}',
    b'{"stream":"TASK_T","seq":2,"duplicate":true}',
    b'{"stream":"TASK_T","domain":"error","seq":3}',  # "error" as a name is no error
])
async def test_a_puback_confirms_its_publish(data: bytes) -> None:
    assert (await _reply(data)).result() is None


@pytest.mark.parametrize(("data", "headers", "error"), [
    (b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}',
     None, nats.js.errors.BadRequestError),
    (b'{"error":{"code":503,"description":"JetStream system temporarily unavailable"}}',
     None, nats.js.errors.ServiceUnavailableError),
    (b"", {"Status": "503"}, nats.js.errors.NoStreamResponseError),
    (b"not json", None, nats.js.errors.APIError),
])
async def test_a_refusal_fails_its_publish(data: bytes, headers: dict[str, str] | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        (await _reply(data, headers)).result()


async def test_a_publish_without_a_puback_times_out_and_stop_fails_the_rest() -> None:
    # Given two publishes whose PubAcks never come, one before a sweep and one after
    acks = PubAcks(0.05)
    await acks.start(_OneSubscription())  # type: ignore[arg-type]
    _, early = acks.expect()
    # When the timeout passes, then the first fails with TimeoutError
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(early, 5)
    _, late = acks.expect()
    # And stop() fails what still waits instead of leaving it waiting forever
    await acks.stop()
    with pytest.raises(nats.errors.ConnectionClosedError):
        late.result()
