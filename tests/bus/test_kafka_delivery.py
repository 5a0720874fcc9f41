"""A done task's Kafka delivery and the commit of the message it answers (no broker: fakes).

The Launcher sends a message's done task, then acknowledges the message. On Kafka the send
returns once the record is queued and the acknowledgement settles the message only when
that record is delivered: the offset is never committed before the done task is confirmed,
and a delivery that fails gives the message back. The fakes below stand in for aiokafka's
clients so each delivery is resolved (or failed) exactly when the test says.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from aiokafka.errors import KafkaTimeoutError  # type: ignore[import-untyped]
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from task.bus import kafka_consumer, kafka_producer
from task.bus.kafka import ATTEMPT_HEADER, KafkaConsumer, KafkaMessage, KafkaOptions, KafkaProducer
from task.bus.kafka_producer import murmur2, partition_for

TOPIC = "tasks"
TP = TopicPartition(TOPIC, 0)


@dataclass
class Record:
    """What aiokafka's consumer hands out, as much as the bus reads."""

    offset: int
    value: bytes
    topic: str = TOPIC
    partition: int = 0
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Sent:
    topic: str
    value: bytes
    partition: int | None
    headers: Any
    delivery: asyncio.Future[Any]


class FakeProducerClient:
    """aiokafka's producer: every record's delivery stays pending until the test resolves it."""

    made: ClassVar[list[FakeProducerClient]] = []

    def __init__(self, **_: Any) -> None:
        self.sent: list[Sent] = []
        self.arrived = asyncio.Event()
        FakeProducerClient.made.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[Any]:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append(Sent(topic, value, partition, headers, delivery))
        self.arrived.set()
        return delivery

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None,
                            partition: int | None = None, headers: Any = None) -> Any:
        return await (await self.send(topic, value, key, partition, headers))


class FakeConsumerClient:
    """aiokafka's consumer on one partition: hands out what the test adds, records commits."""

    def __init__(self, **_: Any) -> None:
        self.records: deque[Record] = deque()
        self.commits: list[dict[TopicPartition, int]] = []
        self.added = asyncio.Event()
        self.next_offset = 0
        FAKE_CONSUMERS.append(self)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def subscribe(self, topics: list[str], listener: Any) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *_: TopicPartition) -> None:
        pass

    def resume(self, *_: TopicPartition) -> None:
        pass

    def paused(self) -> set[TopicPartition]:
        return set()

    def add(self, *bodies: bytes) -> None:
        for body in bodies:
            self.records.append(Record(self.next_offset, body))
            self.next_offset += 1
        self.added.set()

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        if not self.records:
            self.added.clear()
            try:
                async with asyncio.timeout(timeout_ms / 1000):
                    await self.added.wait()
            except TimeoutError:
                return {}
        batch = [self.records.popleft() for _ in range(min(len(self.records), max_records or len(self.records)))]
        return {TP: batch}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def committed(self) -> int | None:
        return self.commits[-1].get(TP) if self.commits else None


FAKE_CONSUMERS: list[FakeConsumerClient] = []


async def _no_topic_creation(options: KafkaOptions, topic: str) -> None:
    pass


def install_fakes(monkeypatch: pytest.MonkeyPatch, producer_client: Any) -> None:
    """aiokafka's clients replaced by the fakes (``producer_client`` for the producer, whose
    ``made`` list starts empty), no topic creation, a failed delivery given back at once."""
    monkeypatch.setattr(kafka_consumer, "AIOKafkaConsumer", FakeConsumerClient)
    monkeypatch.setattr(kafka_producer, "AIOKafkaProducer", producer_client)
    monkeypatch.setattr(kafka_consumer, "ensure_topic", _no_topic_creation)
    monkeypatch.setattr(kafka_producer, "ensure_topic", _no_topic_creation)
    monkeypatch.setattr(kafka_consumer, "GIVE_BACK_DELAY", 0)
    producer_client.made.clear()
    FAKE_CONSUMERS.clear()


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    install_fakes(monkeypatch, FakeProducerClient)
    yield


#: commits are due after each finished message; the timer never fires within a test
URL = "kafka://fake:9092?idempotence=false&commit_every=1&commit_interval=1h&drain_timeout=5s"


async def _until(check: Callable[[], bool], what: str) -> None:
    """Let the consumer's loops run until ``check`` holds (they only wait on the fakes)."""
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.001)
    assert check(), what


async def _held(consumer: KafkaConsumer) -> KafkaMessage:
    """The next message, taken by the calling task (as a Launcher runner takes it)."""
    async with asyncio.timeout(5):
        message = await consumer.msg()
    assert message is not None
    return message


@asynccontextmanager
async def held_message() -> AsyncIterator[tuple[KafkaConsumer, KafkaProducer, FakeConsumerClient, KafkaMessage]]:
    """A consumer on the fakes with one record (``{"id":"a"}``) held by the calling task, and
    a producer: the start of every test of what a send made for a held message does."""
    options = KafkaOptions.from_url(URL)
    async with KafkaConsumer(options, TOPIC, "g", prefetch=4) as consumer, KafkaProducer(options) as producer:
        await consumer.start()
        client = FAKE_CONSUMERS[0]
        client.add(b'{"id":"a"}')
        yield consumer, producer, client, await _held(consumer)


async def test_a_done_task_is_confirmed_before_the_commit_covers_its_message(fakes: None) -> None:
    # Given a message held by this task
    async with held_message() as (consumer, producer, client, message):
        # When the task sends its done task: the send returns with the record only queued
        async with asyncio.timeout(5):  # not wait_for: that would send from another task
            await producer.send("done", b'{"id":"a","result":"complete"}')
        delivery = FakeProducerClient.made[0].sent[0].delivery
        assert not delivery.done()
        await message.ack()
        # Then nothing covering the message is committed while its done task is unconfirmed
        await consumer._commit()
        assert client.committed() in (None, 0)
        # And once the broker confirms the done task, the offset moves past the message
        delivery.set_result(None)
        await _until(lambda: client.committed() == 1, "offset 1 committed after the delivery")


async def test_a_done_task_that_is_not_delivered_gives_the_message_back(fakes: None) -> None:
    async with held_message() as (consumer, producer, client, message):
        await producer.send("done", b'{"id":"a","result":"complete"}')
        await message.ack()
        # When the done task's delivery fails for good
        FakeProducerClient.made[0].sent[0].delivery.set_exception(KafkaTimeoutError())
        # Then the task is published again on its partition with the next attempt, as a nack
        await _until(lambda: len(FakeProducerClient.made) == 2 and bool(FakeProducerClient.made[1].sent),
                     "the message re-published")
        again = FakeProducerClient.made[1].sent[0]
        assert (again.topic, again.value, again.partition) == (TOPIC, b'{"id":"a"}', 0)
        assert again.headers == [(ATTEMPT_HEADER, b"1")]  # one delivery so far: the copy is attempt 2
        # And only once that copy is confirmed does the offset move past the original
        await consumer._commit()
        assert client.committed() in (None, 0)
        again.delivery.set_result(None)
        await _until(lambda: client.committed() == 1, "offset 1 committed after the re-publish")


async def test_a_send_from_a_task_the_worker_started_waits_for_its_own_delivery(fakes: None) -> None:
    async with held_message() as (_, producer, client, message):
        # Given a worker that sends from a task of its own while the message is held
        side = asyncio.create_task(producer.send("elsewhere", b"x"))
        await FakeProducerClient.made[0].arrived.wait()
        # Then that send is still waiting for the broker, as the producer's contract says
        await asyncio.sleep(0)
        assert not side.done()
        FakeProducerClient.made[0].sent[0].delivery.set_result(None)
        await asyncio.wait_for(side, 5)
        await message.ack()
        await _until(lambda: client.committed() == 1, "offset 1 committed")


async def test_a_send_after_the_message_was_settled_waits_for_its_delivery(fakes: None) -> None:
    async with held_message() as (_, producer, _, message):
        await message.ack()
        later = asyncio.create_task(_in_this_task(producer.send("done", b"late")))
        await FakeProducerClient.made[0].arrived.wait()
        await asyncio.sleep(0)
        assert not later.done()
        FakeProducerClient.made[0].sent[0].delivery.set_result(None)
        await asyncio.wait_for(later, 5)


async def _in_this_task(step: Awaitable[None]) -> None:
    await step


async def test_leaving_the_group_waits_for_done_tasks_in_flight_before_the_last_commit(fakes: None) -> None:
    options = KafkaOptions.from_url(URL)
    consumer = KafkaConsumer(options, TOPIC, "g", prefetch=4)
    async with KafkaProducer(options) as producer:
        await consumer.start()
        client = FAKE_CONSUMERS[0]
        client.add(b'{"id":"a"}')
        message = await _held(consumer)
        await producer.send("done", b"done a")
        await message.ack()
        # When the consumer stops with nothing held but a done task still unconfirmed
        leaving = asyncio.create_task(consumer.stop())
        await asyncio.sleep(0)
        assert not leaving.done()
        # Then it leaves once the broker confirms it, and its last commit covers the message
        FakeProducerClient.made[0].sent[0].delivery.set_result(None)
        await asyncio.wait_for(leaving, 5)
        assert client.committed() == 1


async def test_runners_that_wait_inside_their_tasks_each_get_a_message(fakes: None) -> None:
    options = KafkaOptions.from_url(URL)
    async with KafkaConsumer(options, TOPIC, "g", prefetch=5) as consumer:
        await consumer.start()
        release = asyncio.Event()
        got: list[bytes] = []

        async def runner() -> None:
            message = await consumer.msg()
            assert message is not None
            got.append(message.body)
            await release.wait()  # a task waiting on I/O: it does not come back for more
            await message.ack()

        runners = [asyncio.create_task(runner()) for _ in range(5)]
        await asyncio.sleep(0)
        # Given five runners waiting, when one fetch brings five messages at once
        FAKE_CONSUMERS[0].add(*(b"%d" % i for i in range(5)))
        # Then every runner gets one, though none comes back for another
        await _until(lambda: len(got) == 5, "five runners each given a message")
        release.set()
        await asyncio.gather(*runners)
        await _until(lambda: FAKE_CONSUMERS[0].committed() == 5, "offset 5 committed")


async def test_commits_come_every_half_prefetch_by_default(fakes: None) -> None:
    # no commit_every: a crash then redoes about a prefetch of done tasks, not a second's worth
    options = KafkaOptions.from_url("kafka://fake:9092?idempotence=false&commit_interval=1h")
    async with KafkaConsumer(options, TOPIC, "g", prefetch=20) as consumer:
        await consumer.start()
        client = FAKE_CONSUMERS[0]
        client.add(*(b"%d" % i for i in range(30)))
        for _ in range(10):
            await (await _held(consumer)).ack()
        await _until(lambda: client.committed() == 10, "offset 10 committed after 10 acks")


@given(st.binary(max_size=80))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_keyed_records_go_where_aiokafka_sends_them(key: bytes, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, every, every) == DefaultPartitioner()(key, every, every)


def test_a_key_is_not_hashed_for_a_one_partition_topic() -> None:
    assert partition_for(os.urandom(36), [3], [3]) == 3
