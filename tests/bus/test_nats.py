"""The core NATS bus against a real nats-server: the contract, queue groups, auth, TLS."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from task.apps.nop import NopWorker
from task.bus.base import Consumer, Producer
from task.bus.nats import NatsConsumer, NatsOptions, NatsProducer, open_consumer, open_producer
from task.bus.nats_connect import connect, flush_in_order
from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.launcher import Launcher, LauncherOptions
from task.task import Task
from tests.bus.contract import BusContract
from tests.servers.nats import NatsServer, NatsServerFactory, make_tls_files
from tests.servers.ports import free_port

pytestmark = pytest.mark.nats


class TestNatsBus(BusContract):
    redelivers_on_nack = False
    counts_attempts = False
    big_body = 512 * 1024  # under nats-server's default max_payload of 1 MiB

    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return NatsConsumer(NatsOptions.from_url(self.url), topic, "workers", prefetch)

    def producer(self) -> Producer:
        return NatsProducer(NatsOptions.from_url(self.url))


def task_body(i: int) -> bytes:
    return Task.new("nop", "", id=f"t{i}").to_json()


async def test_two_launchers_share_a_queue_group(nats_server: NatsServer) -> None:
    # Given two launchers of one channel and a listener on the done topic
    topic = "q" + uuid.uuid4().hex[:8]
    options = NatsOptions.from_url(nats_server.url)
    done = NatsConsumer(options, topic + "_done", "check", prefetch=100)
    await done.start()
    launchers = [
        Launcher(NopWorker, NatsConsumer(options, topic, "nop", prefetch=10), NatsProducer(options),
                 LauncherOptions(max_in_progress=10, task_type="nop", topic=topic, done_topic=topic + "_done"))
        for _ in range(2)
    ]
    for launcher in launchers:
        await launcher.consumer.start()  # core NATS: subscribed before anything is sent
    running = [asyncio.create_task(launcher.run()) for launcher in launchers]
    try:
        # When 200 tasks are sent
        async with NatsProducer(options) as producer:
            for i in range(200):
                await producer.send(topic, task_body(i))
        # Then each task is done exactly once, and both launchers did a share
        ids = []
        for _ in range(200):
            message = await asyncio.wait_for(done.msg(), 10)
            assert message is not None
            ids.append(Task.from_json(message.body).id)
    finally:
        for launcher in launchers:
            await launcher.stop()
        await asyncio.gather(*running)
        await done.stop()
    assert sorted(ids) == sorted(f"t{i}" for i in range(200))
    shares = [launcher.stats()["tasks_finished"] for launcher in launchers]
    assert all(share > 0 for share in shares), shares  # type: ignore[operator]


async def roundtrip(url: str, credentials: Credentials | None = None) -> None:
    topic = "a" + uuid.uuid4().hex[:8]
    async with open_consumer(url, topic=topic, channel="c", prefetch=1, credentials=credentials or Credentials()) as consumer, \
            open_producer(url, credentials=credentials or Credentials()) as producer:
        await producer.send(topic, b'{"type":"t","info":"x"}')
        message = await asyncio.wait_for(consumer.msg(), 10)
        assert message is not None and message.body == b'{"type":"t","info":"x"}'


async def test_unreachable_server_is_one_clear_error() -> None:
    port = free_port()
    with pytest.raises(BusError, match=rf"^cannot connect to nats://127.0.0.1:{port}: .*; is nats-server running\?$"):
        await roundtrip(f"nats://127.0.0.1:{port}")


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="pending_limt"):
        NatsOptions.from_url("nats://h:1?pending_limt=5")


async def test_user_and_password(nats_servers: NatsServerFactory) -> None:
    server = nats_servers("--user", "alice", "--pass", "s3cret")
    await roundtrip(f"nats://alice:s3cret@{server.hostport}")
    await roundtrip(f"nats://{server.hostport}", Credentials(user="alice", password="s3cret"))
    with pytest.raises(BusError, match="cannot connect") as refused:
        await roundtrip(f"nats://alice:wrong@{server.hostport}")
    assert "wrong" not in str(refused.value)  # the password never shows


async def test_token(nats_servers: NatsServerFactory) -> None:
    server = nats_servers("--auth", "tok3n")
    await roundtrip(f"nats://{server.hostport}?token=tok3n")
    await roundtrip(f"nats://{server.hostport}", Credentials(token="tok3n"))
    with pytest.raises(BusError, match="cannot connect"):
        await roundtrip(f"nats://{server.hostport}")


async def test_tls_with_a_self_signed_ca(nats_servers: NatsServerFactory, tmp_path: Path) -> None:
    # Given a CA made here, a server certificate and a client certificate it signed
    files = make_tls_files(tmp_path)
    server = nats_servers(
        "--tls", "--tlscert", files["server_cert"], "--tlskey", files["server_key"],
        "--tlsverify", "--tlscacert", files["ca"],
    )
    credentials = Credentials(tls_ca=files["ca"], tls_cert=files["client_cert"], tls_key=files["client_key"])
    # Then a client trusting that CA, with its certificate, gets through
    await roundtrip(f"nats://{server.hostport}", credentials)
    # and one without its client certificate does not
    with pytest.raises(BusError, match="cannot connect"):
        await roundtrip(f"nats://{server.hostport}", Credentials(tls_ca=files["ca"]))


async def test_a_flush_reaches_the_server_after_what_was_written_before_it(nats_server: NatsServer) -> None:
    # nats-py 2.16 writes a flush's PING ahead of a SUB still in its pending buffer, so the
    # PONG could confirm a subscription the server had not seen yet (a message sent right
    # after start() was then lost, about one run in four of the contract tests)
    client = await connect(NatsOptions.from_url(nats_server.url).connect)
    written: list[bytes] = []
    transport = client._transport
    assert transport is not None
    write, writelines = transport.write, transport.writelines

    def record(data: bytes) -> None:
        written.append(bytes(data))
        write(data)

    def record_lines(lines: list[bytes]) -> None:
        written.extend(bytes(line) for line in lines)
        writelines(lines)

    transport.write, transport.writelines = record, record_lines  # type: ignore[method-assign, assignment]
    try:
        await client.subscribe("ordered", queue="workers")
        await flush_in_order(client)
        wire = b"".join(written)
        assert wire.index(b"SUB ordered") < wire.index(b"PING"), wire
    finally:
        await client.close()


async def test_a_message_sent_right_after_start_arrives(nats_server: NatsServer) -> None:
    # Given a started consumer, repeatedly and each time on a new subject
    async with NatsProducer(NatsOptions.from_url(nats_server.url)) as producer:
        for i in range(30):
            topic = f"right-after-start-{uuid.uuid4().hex[:8]}"
            async with NatsConsumer(NatsOptions.from_url(nats_server.url), topic, "workers") as consumer:
                # When a message is sent at once
                await producer.send(topic, b'{"type":"t","info":"first"}')
                # Then it arrives every time
                message = await asyncio.wait_for(consumer.msg(), 10)
                assert message is not None and message.body == b'{"type":"t","info":"first"}', i


async def test_a_slow_consumer_is_one_warning_with_the_subject_not_one_per_dropped_message(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker's consumer whose client buffers 5 messages and that nobody reads
    topic = "slow." + uuid.uuid4().hex[:8]
    url = nats_server.url + ("&" if "?" in nats_server.url else "?") + "pending_limit=5"
    caplog.set_level("WARNING", logger="task.bus.nats_connect")
    consumer = NatsConsumer(NatsOptions.from_url(url), topic, "workers", 1)
    await consumer.start()
    try:
        # When 500 tasks arrive at once: nats-py drops and reports every one past the buffer
        async with NatsProducer(NatsOptions.from_url(nats_server.url)) as producer:
            for i in range(500):
                await producer.send(topic, b"task %d" % i)
        assert consumer._client is not None
        await flush_in_order(consumer._client)  # a round trip on the consumer's connection:
        await asyncio.sleep(0.2)  # the messages before the PONG are read; reports run as tasks
    finally:
        await consumer.stop()
    # Then the log has one line that names the subject and says what to do, not hundreds
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1, lines[:3]
    assert topic in lines[0] and "pending_limit" in lines[0]


@pytest.mark.parametrize("topic", ["", "done topic", "done\r\nPUB injected 1\r\nx", "tab\there"])
async def test_a_topic_that_is_no_subject_is_refused_and_publishes_nothing(nats_server: NatsServer, topic: str) -> None:
    # Given a producer (it checks each subject once, then publishes without nats-py's check)
    # and a listener on the subject a line break would inject a message into
    listener = await connect(NatsOptions.from_url(nats_server.url).connect)
    heard: list[bytes] = []

    async def hear(msg: object) -> None:
        heard.append(msg.data)  # type: ignore[attr-defined]

    await listener.subscribe("injected", cb=hear)
    await flush_in_order(listener)
    try:
        async with NatsProducer(NatsOptions.from_url(nats_server.url)) as producer:
            await producer.send("fine", b"first")  # a good subject first: checks are per subject
            # When a done task is sent to a topic that is no NATS subject, twice
            for _ in range(2):
                with pytest.raises(BusError, match="no spaces, tabs or line breaks"):
                    await producer.send(topic, b"x")
        await flush_in_order(listener)
        # Then nothing reached the server as a command of its own
        assert heard == []
    finally:
        await listener.close()


async def test_stop_gives_every_message_it_held_back_to_another_worker_of_the_channel(
    nats_server: NatsServer,
) -> None:
    # Given worker A's consumer holding 20 messages it has not handed out but one
    topic = "held." + uuid.uuid4().hex[:8]
    options = NatsOptions.from_url(nats_server.url)
    a = NatsConsumer(options, topic, "workers", 1)
    await a.start()
    async with NatsProducer(options) as producer:
        for i in range(21):
            await producer.send(topic, b"task %d" % i)
    assert a._client is not None
    await flush_in_order(a._client)  # a round trip on A's connection: all 21 are in its queue
    first = await a.msg()
    assert first is not None and first.body == b"task 0"
    # and worker B of the same channel
    async with NatsConsumer(options, topic, "workers", 1) as b:
        # When A stops
        await a.stop()
        # Then B gets the other 20, in order, and A says how many it gave back
        got = [await asyncio.wait_for(b.msg(), 10) for _ in range(20)]
        assert [m.body for m in got if m is not None] == [b"task %d" % i for i in range(1, 21)]
        assert a.info()["waiting"] == 0


@pytest.mark.parametrize("change", ["subscription queue", "message class"])
async def test_a_nats_py_that_keeps_messages_otherwise_is_refused_at_start_by_name(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # Given a nats-py whose subscriptions keep their messages in some other way, or whose
    # client builds its messages without a class of ours to use
    from nats.aio.client import Client

    if change == "message class":
        monkeypatch.delattr(Client, "msg_class")
    else:
        original = Client.subscribe

        async def other_internals(self: Client, *args: object, **kwargs: object) -> object:
            sub = await original(self, *args, **kwargs)  # type: ignore[arg-type]
            sub._pending_size = None  # type: ignore[assignment]
            return sub

        monkeypatch.setattr(Client, "subscribe", other_internals)
    consumer = NatsConsumer(NatsOptions.from_url(nats_server.url), "other." + uuid.uuid4().hex[:8], "workers")
    # When the consumer starts, then it refuses with the version and the supported range
    with pytest.raises(BusError, match=r"nats-py \S+ keeps .* pip install 'nats-py>=2.7,<3'"):
        await consumer.start()
    await consumer.stop()
