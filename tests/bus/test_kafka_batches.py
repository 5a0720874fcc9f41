"""Done tasks sent for Kafka messages go out in record batches, a round at a time (no broker).

The fakes stand in for aiokafka's producer (``create_batch``/``send_batch``, its metadata)
so each batch is delivered or failed exactly when the test says; the consumer fakes are the
delivery tests' own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]

from task.bus import kafka_consumer, kafka_producer
from task.bus.kafka import KafkaConsumer, KafkaOptions, KafkaProducer
from task.bus.kafka_batches import RecordBatches
from tests.bus.test_kafka_delivery import (
    FAKE_CONSUMERS,
    TOPIC,
    URL,
    FakeConsumerClient,
    _held,
    _until,
    held_message,
    install_fakes,
)


class FakeBuilder:
    """aiokafka's BatchBuilder: takes records until ``room`` bytes are used."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes, headers: list[Any]) -> object | None:
        if len(value) > self.room:
            return None
        self.room -= len(value)
        self.records.append((key, value))
        return object()


@dataclass
class SentBatch:
    topic: str
    partition: int
    values: list[bytes]
    delivery: asyncio.Future[Any]


@dataclass
class FakeCluster:
    partitions: dict[str, set[int]] = field(default_factory=dict)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


class FakeBatchClient:
    """aiokafka's producer as far as batches go; a record sent alone is recorded too."""

    made: ClassVar[list[FakeBatchClient]] = []
    batch_room = 1000

    def __init__(self, **_: Any) -> None:
        self.batches: list[SentBatch] = []
        self.alone: list[bytes] = []
        self.client = type("Client", (), {"cluster": FakeCluster({"done": {0, 1, 2}})})()
        FakeBatchClient.made.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(self.batch_room)

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.batches.append(SentBatch(topic, partition, [value for _, value in builder.records], delivery))
        return delivery

    async def send(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> asyncio.Future[Any]:
        self.alone.append(value)
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        return delivery

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None, **kw: Any) -> Any:
        return await (await self.send(topic, value, key, **kw))


@pytest.fixture
def batch_fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_fakes(monkeypatch, FakeBatchClient)
    yield


async def _turn() -> None:
    """Let every task that is ready run (the batch sender starts on the next turn)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_records_appended_in_one_turn_leave_as_one_batch_per_partition_in_order() -> None:
    client = FakeBatchClient()
    batches = RecordBatches(client)
    futures = [batches.append("done", i % 2, None, b"r%d" % i) for i in range(6)]
    await _turn()
    assert [(b.partition, b.values) for b in client.batches] == [(0, [b"r0", b"r2", b"r4"]), (1, [b"r1", b"r3", b"r5"])]
    assert not any(f is None or f.done() for f in futures)


async def test_the_next_round_leaves_only_once_the_first_is_delivered() -> None:
    client = FakeBatchClient()
    batches = RecordBatches(client)
    first = batches.append("done", 0, None, b"a")
    await _turn()
    # Given a round on its way, records sent meanwhile fill the next round
    second = [batches.append("done", 0, None, b"b"), batches.append("done", 0, None, b"c")]
    await _turn()
    assert len(client.batches) == 1
    # When the broker confirms the first round
    client.batches[0].delivery.set_result(None)
    await _turn()
    # Then its records are delivered and the next round leaves as one batch
    assert first is not None and first.done() and first.exception() is None
    assert [b.values for b in client.batches] == [[b"a"], [b"b", b"c"]]
    assert not any(f is None or f.done() for f in second)
    client.batches[1].delivery.set_result(None)
    await batches.flush()
    assert all(f is not None and f.done() for f in second)


async def test_a_batch_that_fails_fails_every_record_in_it() -> None:
    client = FakeBatchClient()
    batches = RecordBatches(client)
    futures = [batches.append("done", 0, None, b"x%d" % i) for i in range(3)]
    await _turn()
    client.batches[0].delivery.set_exception(KafkaTimeoutError())
    await batches.flush()
    assert all(f is not None and isinstance(f.exception(), KafkaTimeoutError) for f in futures)


async def test_a_full_batch_leaves_before_its_partitions_next_and_a_record_too_big_for_any_goes_alone() -> None:
    client = FakeBatchClient()
    client.batch_room = 4
    batches = RecordBatches(client)
    assert batches.append("done", 0, None, b"12") is not None
    assert batches.append("done", 0, None, b"34") is not None
    assert batches.append("done", 0, None, b"56") is not None  # the first batch is full: a second one
    assert batches.append("done", 0, None, b"too big") is None  # fits no batch: the caller sends it alone
    await _turn()
    assert [b.values for b in client.batches] == [[b"12", b"34"], [b"56"]]


@asynccontextmanager
async def _done_task_in_a_batch() -> AsyncIterator[tuple[KafkaConsumer, FakeConsumerClient, SentBatch]]:
    """A message held and acknowledged after its done task was sent: the batch it went in."""
    async with held_message() as (consumer, producer, client, message):
        async with asyncio.timeout(5):
            await producer.send("done", b'{"id":"a","result":"complete"}', key="a")
        await message.ack()
        await _until(lambda: bool(FakeBatchClient.made[0].batches), "the done task's batch sent")
        yield consumer, client, FakeBatchClient.made[0].batches[0]


async def test_a_done_task_sent_for_a_message_is_batched_and_its_commit_waits_for_the_batch(batch_fakes: None) -> None:
    async with _done_task_in_a_batch() as (consumer, client, sent):
        # Then it went in a batch, to the partition its key hashes to, as aiokafka would send it
        assert sent.values == [b'{"id":"a","result":"complete"}']
        assert sent.partition == kafka_producer.partition_for(b"a", [0, 1, 2], [0, 1, 2])
        # And nothing covering the message is committed before the batch is delivered
        await consumer._commit()
        assert client.committed() in (None, 0)
        sent.delivery.set_result(None)
        await _until(lambda: client.committed() == 1, "offset 1 committed after the batch's delivery")


async def test_a_failed_batch_gives_its_messages_back(batch_fakes: None) -> None:
    async with _done_task_in_a_batch() as (_, client, sent):
        sent.delivery.set_exception(KafkaTimeoutError())
        # Then the task is published again (by the consumer's own producer) and only then committed
        await _until(lambda: len(FakeBatchClient.made) == 2 and bool(FakeBatchClient.made[1].alone),
                     "the message re-published")
        assert FakeBatchClient.made[1].alone == [b'{"id":"a"}']
        await _until(lambda: client.committed() == 1, "offset 1 committed after the re-publish")


async def test_a_done_task_for_a_topic_without_metadata_is_sent_alone(batch_fakes: None) -> None:
    async with held_message() as (_, producer, client, message):
        await producer.send("unknown-yet", b"done a", key="a")
        await message.ack()
        assert FakeBatchClient.made[0].alone == [b"done a"]
        await _until(lambda: client.committed() == 1, "offset 1 committed")


async def test_stop_sends_what_is_batched_before_closing(batch_fakes: None) -> None:
    options = KafkaOptions.from_url(URL)
    consumer = KafkaConsumer(options, TOPIC, "g", prefetch=4)
    producer = KafkaProducer(options)
    await consumer.start()
    FAKE_CONSUMERS[0].add(b'{"id":"a"}')
    message = await _held(consumer)
    await producer.send("done", b"done a", key="a")
    await message.ack()
    stopping = asyncio.create_task(producer.stop())
    await _until(lambda: bool(FakeBatchClient.made[0].batches), "the batch sent at stop")
    assert not stopping.done()  # stop waits for the delivery
    FakeBatchClient.made[0].batches[0].delivery.set_result(None)
    await asyncio.wait_for(stopping, 5)
    await consumer.stop()
    assert FAKE_CONSUMERS[0].committed() == 1


async def test_the_first_sends_to_a_new_topic_create_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []
    gate = asyncio.Event()

    async def slow_creation(options: KafkaOptions, topic: str) -> None:
        created.append(topic)
        await gate.wait()

    FakeBatchClient.made.clear()
    monkeypatch.setattr(kafka_producer, "AIOKafkaProducer", FakeBatchClient)
    monkeypatch.setattr(kafka_producer, "ensure_topic", slow_creation)
    async with KafkaProducer(KafkaOptions.from_url(URL)) as producer:
        # Given a hundred runners whose first done tasks come at once
        sends = [asyncio.create_task(producer.send("done", b"%d" % i)) for i in range(100)]
        await _turn()
        gate.set()
        await asyncio.wait_for(asyncio.gather(*sends), 5)
        # Then the topic was checked once (each check opens an admin connection), and all were sent
        assert created == ["done"]
        assert len(FakeBatchClient.made[0].alone) == 100


async def test_a_failed_topic_creation_is_tried_again_by_the_next_send(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    async def failing_once(options: KafkaOptions, topic: str) -> None:
        attempts.append(topic)
        if len(attempts) == 1:
            raise kafka_producer.BusError("the broker refused it")

    FakeBatchClient.made.clear()
    monkeypatch.setattr(kafka_producer, "AIOKafkaProducer", FakeBatchClient)
    monkeypatch.setattr(kafka_producer, "ensure_topic", failing_once)
    async with KafkaProducer(KafkaOptions.from_url(URL)) as producer:
        with pytest.raises(kafka_producer.BusError):
            await producer.send("done", b"1")
        await producer.send("done", b"2")
        assert attempts == ["done", "done"]
        assert FakeBatchClient.made[0].alone == [b"2"]


class KeyedConsumerClient(FakeConsumerClient):
    """The consumer fake on partition 0 of a three-partition topic, its records keyed ``key``."""

    key: ClassVar[bytes | None] = None

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._client = type("Client", (), {"cluster": FakeCluster({TOPIC: {0, 1, 2}})})()

    def add(self, *bodies: bytes) -> None:
        super().add(*bodies)
        for record in self.records:
            record.key = self.key


#: a done key the default partitioner does not send to partition 0 of three
HASHED_ELSEWHERE = next(k for k in (b"k%d" % i for i in range(100))
                        if kafka_producer.partition_for(k, [0, 1, 2], [0, 1, 2]) != 0)


@pytest.mark.parametrize(("task_key", "done_partitions", "placed"), [  # the task comes from partition 0
    (None, {0, 1, 2}, "with its task"),  # an unkeyed task: its done task goes where it is
    (HASHED_ELSEWHERE, {0, 1, 2}, "with its task"),  # the same key: the same number, unhashed
    (b"another key", {0, 1, 2}, "hashed"),  # another key: where murmur2 of the done key says
    (None, {0, 1, 2, 3}, "hashed"),  # topics of different sizes: numbers do not correspond
])
async def test_where_a_done_task_goes(
    batch_fakes: None, monkeypatch: pytest.MonkeyPatch, task_key: bytes | None, done_partitions: set[int], placed: str,
) -> None:
    monkeypatch.setattr(kafka_consumer, "AIOKafkaConsumer", KeyedConsumerClient)
    monkeypatch.setattr(KeyedConsumerClient, "key", task_key)
    async with held_message() as (_, producer, _, message):  # from partition 0
        await producer.start()
        FakeBatchClient.made[0].client.cluster.partitions["done"] = done_partitions
        await producer.send("done", b"done", key=HASHED_ELSEWHERE.decode())
        await message.ack()
        await _until(lambda: bool(FakeBatchClient.made[0].batches), "the done task's batch sent")
        (sent,) = FakeBatchClient.made[0].batches
        every = sorted(done_partitions)
        expected = 0 if placed == "with its task" else kafka_producer.partition_for(HASHED_ELSEWHERE, every, every)
        assert expected != 0 or placed == "with its task"  # the two placements differ here
        assert sent.partition == expected
        sent.delivery.set_result(None)


async def _three_done_tasks_in_one_batch(consumer: KafkaConsumer, producer: KafkaProducer) -> SentBatch:
    """Three messages taken by this task, each acknowledged after its done task was sent."""
    batches = FakeBatchClient.made[0].batches
    before = len(batches)
    FAKE_CONSUMERS[0].add(b'{"id":"b"}', b'{"id":"c"}', b'{"id":"d"}')
    for name in "bcd":
        message = await _held(consumer)
        await producer.send("done", b"done " + name.encode(), key=name)
        await message.ack()
    await _until(lambda: len(batches) > before, "the done tasks' batch sent")
    return batches[-1]


async def test_messages_answered_by_one_batch_are_committed_together_once_it_is_delivered(batch_fakes: None) -> None:
    # Given a held message answered and three more whose done tasks go to one partition
    async with held_message() as (consumer, producer, client, message):
        FakeBatchClient.made[0].client.cluster.partitions["done"] = {0}
        await producer.send("done", b"done a", key="a")
        await message.ack()
        await _until(lambda: bool(FakeBatchClient.made[0].batches), "the first batch sent")
        FakeBatchClient.made[0].batches[0].delivery.set_result(None)
        await _until(lambda: client.committed() == 1, "offset 1 committed")
        sent = await _three_done_tasks_in_one_batch(consumer, producer)
        assert sent.values == [b"done b", b"done c", b"done d"]
        # Then none of them is committed before the batch is delivered
        await consumer._commit()
        assert client.committed() == 1
        # And all three are once it is
        sent.delivery.set_result(None)
        await _until(lambda: client.committed() == 4, "offset 4 committed after the batch's delivery")


async def test_a_failed_batch_gives_back_every_message_it_answered(batch_fakes: None) -> None:
    async with held_message() as (consumer, producer, client, message):
        FakeBatchClient.made[0].client.cluster.partitions["done"] = {0}
        await message.ack()  # no done task: settled at once
        sent = await _three_done_tasks_in_one_batch(consumer, producer)
        # When the batch carrying their three done tasks fails
        sent.delivery.set_exception(KafkaTimeoutError())
        # Then each of the three is published again, and only then committed
        await _until(lambda: len(FakeBatchClient.made) == 2 and len(FakeBatchClient.made[1].alone) == 3,
                     "the three messages re-published")
        assert sorted(FakeBatchClient.made[1].alone) == [b'{"id":"b"}', b'{"id":"c"}', b'{"id":"d"}']
        await _until(lambda: client.committed() == 4, "offset 4 committed after the re-publishes")


async def test_a_prefetch_of_done_tasks_on_their_way_does_not_hold_back_the_next_messages(batch_fakes: None) -> None:
    # the runners keep going while a round of done tasks is on its way and the next fills
    options = KafkaOptions.from_url(URL)
    async with KafkaConsumer(options, TOPIC, "g", prefetch=2) as consumer, KafkaProducer(options) as producer:
        await consumer.start()
        client = FAKE_CONSUMERS[0]
        client.add(*(b'{"id":"%d"}' % i for i in range(8)))
        # Given two prefetches (four) of messages acknowledged whose done tasks are not delivered
        for i in range(4):
            message = await _held(consumer)
            await producer.send("done", b"done %d" % i, key=str(i))
            await message.ack()
        # Then the next two are still handed out
        for i in range(4, 6):
            message = await _held(consumer)
            await producer.send("done", b"done %d" % i, key=str(i))
            await message.ack()
        # But with three prefetches on their way the consumer takes no more from the broker
        await _turn()
        assert consumer.info()["queued"] == 0 and len(client.records) == 2
        # Until the done tasks are delivered
        def deliver() -> bool:
            for batch in FakeBatchClient.made[0].batches:
                if not batch.delivery.done():
                    batch.delivery.set_result(None)
            return not client.records
        await _until(deliver, "the last two fetched after the deliveries")
        await _until(lambda: deliver() and client.committed() == 6, "the six answered committed")


async def test_an_acknowledgement_within_the_allowance_lets_the_next_messages_in_at_once(
    batch_fakes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fetcher left waiting for room kept the runners idle for a produce round trip per
    # prefetch (a quarter of the time in the harness); only the pause timer woke it otherwise
    monkeypatch.setattr(kafka_consumer, "PAUSE_AFTER", 3600.0)
    options = KafkaOptions.from_url(URL)
    async with KafkaConsumer(options, TOPIC, "g", prefetch=2) as consumer, KafkaProducer(options) as producer:
        await consumer.start()
        client = FAKE_CONSUMERS[0]
        client.add(*(b'{"id":"%d"}' % i for i in range(4)))
        go = asyncio.Event()

        async def runner(i: int) -> None:  # as a Launcher runner: one message per task
            message = await _held(consumer)
            await go.wait()
            await producer.send("done", b"done %d" % i, key=str(i))
            await message.ack()

        # Given a full prefetch handed out, and the consumer waiting for room
        runners = [asyncio.create_task(runner(i)) for i in range(2)]
        await _until(lambda: consumer.info()["in_flight"] == 2, "both messages handed out")
        await _turn()
        # When both are acknowledged after sending their done tasks (not delivered yet)
        go.set()
        await asyncio.gather(*runners)
        assert consumer.info()["delivering"] == 2
        # Then the next message is handed out without waiting for those deliveries
        assert (await _held(consumer)).body == b'{"id":"2"}'
        for batch in FakeBatchClient.made[0].batches:
            batch.delivery.set_result(None)
