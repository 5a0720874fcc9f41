"""The Kafka bus against a real Kafka-protocol broker (Tansu, started by the fixture)."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest

from task.bus.base import Consumer, Producer
from task.bus.kafka import KafkaConsumer, KafkaOptions, KafkaProducer
from task.credentials import Credentials
from task.errors import BusError, ConfigError
from tests.bus.contract import BusContract
from tests.servers.tansu import Tansu

pytestmark = pytest.mark.kafka


class TestKafkaBus(BusContract):
    @pytest.fixture(autouse=True)
    def _url(self, kafka_url: str) -> None:
        self.url = kafka_url + "&partitions=2&commit_interval=100ms"

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return KafkaConsumer(KafkaOptions.from_url(self.url), topic, "g-" + topic, prefetch)

    def producer(self) -> Producer:
        return KafkaProducer(KafkaOptions.from_url(self.url))


# ---------------------------------------------------------------- options and failures


def test_options_come_from_the_url_and_credentials() -> None:
    options = KafkaOptions.from_url(
        "kafka://a:1,b:2?idempotence=false&partitions=6&sasl=scram-sha-512&drain_timeout=3s",
        Credentials(user="u", password="p", tls_ca="/ca.pem"),
    )
    assert options.bootstrap == ["a:1", "b:2"]
    assert (options.idempotence, options.partitions, options.drain_timeout) == (False, 6, 3.0)
    assert options.sasl == "SCRAM-SHA-512" and options.tls  # TLS files turn TLS on
    assert KafkaOptions.from_url("kafka://h").bootstrap == ["h:9092"]


@pytest.mark.parametrize(
    ("url", "named"),
    [("kafka://h:1?partition=3", "partition"), ("kafka://h:1?sasl=gssapi", "sasl"),
     ("kafka://h:1?sasl=plain", "user"), ("kafka://h:1?idempotence=maybe", "idempotence")],
)
def test_a_bad_option_is_a_config_error_naming_it(url: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        KafkaOptions.from_url(url)


async def test_an_unreachable_broker_is_a_bus_error_at_start() -> None:
    from tests.servers.ports import free_port

    options = KafkaOptions.from_url(f"kafka://127.0.0.1:{free_port()}")
    with pytest.raises(BusError, match="cannot reach"):
        await KafkaConsumer(options, "t", "g").start()
    with pytest.raises(BusError, match="cannot reach"):
        await KafkaProducer(options).start()


async def test_a_broker_refusing_idempotence_gets_an_error_naming_the_option(tansu: Tansu) -> None:
    # Tansu refuses idempotent producers; the default is on, as real Kafka wants it
    producer = KafkaProducer(KafkaOptions.from_url(f"kafka://127.0.0.1:{tansu.port}"))
    with pytest.raises(BusError, match="idempotence=false"):
        await producer.start()
    await producer.stop()


# ---------------------------------------------------------------- commits and rebalances


async def _committed(url: str, topic: str, group: str) -> int | None:
    """The offset ``group`` committed on partition 0 of ``topic``, read by an outsider."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    reader = AIOKafkaConsumer(
        group_id=group, enable_auto_commit=False, **KafkaOptions.from_url(url).client_args()
    )
    await reader.start()
    try:
        offset = await reader.committed(TopicPartition(topic, 0))
    finally:
        await reader.stop()
    return offset if offset is None else int(offset)


async def _eventually(check: object, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def test_out_of_order_completion_commits_only_the_safe_offset(kafka_url: str) -> None:
    url = kafka_url + "&partitions=1&commit_interval=100ms&drain_timeout=100ms"
    topic, group = "ooo" + uuid4().hex[:8], "g" + uuid4().hex[:8]
    async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
        for i in range(5):
            await producer.send(topic, b'{"type":"t","info":"%d"}' % i)
    consumer = KafkaConsumer(KafkaOptions.from_url(url), topic, group, prefetch=5)
    async with consumer:
        # Given five tasks of one partition running at once
        messages = [await asyncio.wait_for(consumer.msg(), 15) for _ in range(5)]
        assert [m.body for m in messages if m] == [b'{"type":"t","info":"%d"}' % i for i in range(5)]
        # When the last four finish before the first
        for message in messages[1:]:
            assert message is not None
            await message.ack()
        await asyncio.sleep(0.5)  # several commit intervals
        # Then the group's committed offset stays at the unfinished first one
        assert await _committed(url, topic, group) == 0
        # And moves past all five once it finishes
        assert messages[0] is not None
        await messages[0].ack()

        async def all_committed() -> bool:
            return await _committed(url, topic, group) == 5

        await _eventually(all_committed, "offset 5 committed")


async def _work(consumer: KafkaConsumer, seen: list[tuple[str, bytes]], name: str) -> None:
    async def runner() -> None:
        while (message := await consumer.msg()) is not None:
            await asyncio.sleep(0.1)
            seen.append((name, message.body))
            await message.ack()

    await asyncio.gather(*(runner() for _ in range(consumer.prefetch)))


async def test_two_consumers_share_a_topic_across_a_rebalance_without_duplicates(kafka_url: str) -> None:
    url = kafka_url + "&partitions=4&session_timeout=3s&drain_timeout=5s&commit_interval=200ms"
    topic, group = "share" + uuid4().hex[:8], "g" + uuid4().hex[:8]
    bodies = {b'{"type":"t","id":"%d"}' % i for i in range(400)}
    async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
        for body in sorted(bodies):
            await producer.send(topic, body)
    seen: list[tuple[str, bytes]] = []
    first = KafkaConsumer(KafkaOptions.from_url(url), topic, group, prefetch=10)
    second = KafkaConsumer(KafkaOptions.from_url(url), topic, group, prefetch=10)
    workers = [asyncio.create_task(_work(first, seen, "first"))]
    try:
        # Given one consumer of a 4-partition topic part-way through the backlog
        await _eventually(lambda: _true_when(len(seen) >= 30), "the first consumer ran 30", 20)
        # When a second member joins the group mid-run (a rebalance)
        workers.append(asyncio.create_task(_work(second, seen, "second")))
        await _eventually(lambda: _true_when({b for _, b in seen} == bodies), "every task ran", 40)
    finally:
        await first.stop()
        await second.stop()
        await asyncio.gather(*workers)
    # Then every task ran exactly once (no crash, so no duplicate), and both members worked
    assert sorted(b for _, b in seen) == sorted(bodies)
    assert {name for name, _ in seen} == {"first", "second"}


async def _true_when(value: bool) -> bool:
    return value


@pytest.mark.faults
@pytest.mark.slow
async def test_a_sigkilled_worker_loses_no_task(kafka_url: str) -> None:
    import json
    import signal
    import subprocess
    import sys

    from task.task import Task

    url = kafka_url + "&partitions=4&session_timeout=3s&drain_timeout=2s&commit_interval=200ms"
    topic = "kill" + uuid4().hex[:8]
    ids = {f"k{i}" for i in range(1000)}
    async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
        for ident in sorted(ids):
            await producer.send(topic, Task.new("nop", "sleep=200ms", id=ident).to_json())
    done: set[str] = set()
    collector = KafkaConsumer(KafkaOptions.from_url(url), topic + "_done", "c" + uuid4().hex[:8], 100)

    async def collect() -> None:
        while (message := await collector.msg()) is not None:
            done.add(json.loads(message.body)["id"])
            await message.ack()

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "task.cli", "worker", "nop", "--bus", url, "--topic", topic,
             "--type", "nop", "--done-topic", topic + "_done", "--max-in-progress", "50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    collecting = asyncio.create_task(collect())
    first = worker()
    second: subprocess.Popen[bytes] | None = None
    try:
        # Given a worker with 50 tasks in progress, part-way through 1000
        await _eventually(lambda: _true_when(len(done) >= 100), "100 tasks done", 30)
        # When it is SIGKILLed (no drain, no final commit) and another worker takes over
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert len(done) < len(ids), "the worker finished before it could be killed"
        second = worker()
        # Then every task is done at least once: none lost
        await _eventually(lambda: _true_when(done >= ids), "every task done", 45)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(15)
        await collector.stop()
        await collecting
