"""The Kafka inspector against Tansu: group lag from committed offsets (with the true end
of each partition, which Tansu's ListOffsets under-reports), peeking without committing."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]

from task.bus.kafka import KafkaConsumer, KafkaOptions, KafkaProducer
from task.inspect import open_inspector
from task.inspect.kafka import KafkaInspector
from task.task import Task

pytestmark = pytest.mark.kafka


def body(i: int) -> bytes:
    return Task.new("nop", f"task {i}", id=f"t{i}").to_json()


@pytest.fixture
def url(kafka_url: str) -> str:
    return kafka_url + "&partitions=1&commit_interval=50ms"


async def send(url: str, topic: str, count: int) -> None:
    """``count`` tasks in one record batch (what trips Tansu's ListOffsets), on a topic
    created as the bus creates it."""
    options = KafkaOptions.from_url(url)
    async with KafkaProducer(options) as producer:
        await producer.send(topic, body(0))
    client = AIOKafkaProducer(enable_idempotence=False, **options.client_args())
    await client.start()
    try:
        pending = [await client.send(topic, body(i)) for i in range(1, count)]
        await asyncio.gather(*pending)
    finally:
        await client.stop()


async def test_listed_end_offsets_under_report_on_tansu(url: str) -> None:
    # Why the inspector fetches to find the end: ListOffsets says 1 for a batch of 10
    topic = "in" + uuid4().hex[:8]
    await send(url, topic, 10)
    options = KafkaOptions.from_url(url)
    client = AIOKafkaConsumer(**options.client_args())
    await client.start()
    try:
        listed = (await client.end_offsets([TopicPartition(topic, 0)]))[TopicPartition(topic, 0)]
    finally:
        await client.stop()
    assert listed < 10
    stats = await open_inspector(url).backlog(topic, "nobody")
    assert stats.waiting == 10


async def test_backlog_is_the_group_lag_and_peek_commits_nothing(url: str) -> None:
    # Given 10 tasks, of which a worker of group "workers" has run 4 (and still runs)
    topic = "in" + uuid4().hex[:8]
    await send(url, topic, 10)
    inspector = open_inspector(url)
    consumer = KafkaConsumer(KafkaOptions.from_url(url), topic, "workers", prefetch=1)
    async with consumer:
        for _ in range(4):
            message = await asyncio.wait_for(consumer.msg(), 20)
            assert message is not None
            await message.ack()
        # (its commit is batched: wait until it landed)
        async with asyncio.timeout(20):
            while (stats := await inspector.backlog(topic, "workers")).waiting != 6:
                await asyncio.sleep(0.05)
        # Then 6 wait for "workers", in flight and redelivered are unknown to Kafka,
        # and all 10 wait for a group that never ran
        assert (stats.waiting, stats.in_flight, stats.redelivered) == (6, None, None)
        assert (await inspector.backlog(topic, "other")).waiting == 10
        # Peeking shows the next 3 of "workers", twice the same: nothing was committed
        for _ in range(2):
            assert [Task.from_json(b).id for b in await inspector.peek(topic, 3, "workers")] == ["t4", "t5", "t6"]
        assert (await inspector.backlog(topic, "workers")).waiting == 6
        # and the worker goes on with the 5th task
        message = await asyncio.wait_for(consumer.msg(), 20)
        assert message is not None and Task.from_json(message.body).id == "t4"
    # The listing names the group and its lag
    rows = await inspector.topics(prefix=topic)
    assert [(r.topic, r.channel, r.waiting) for r in rows] == [(topic, "workers", 6)]
    await inspector.close()


async def test_oldest_age_is_the_time_of_the_record_at_the_commit(url: str) -> None:
    topic = "in" + uuid4().hex[:8]
    await send(url, topic, 2)
    options = KafkaOptions.from_url(url)
    client = AIOKafkaConsumer(auto_offset_reset="earliest", **options.client_args())
    await client.start()
    try:
        client.assign([TopicPartition(topic, 0)])
        first = await asyncio.wait_for(client.getone(), 20)
    finally:
        await client.stop()
    inspector = KafkaInspector(options, clock=lambda: first.timestamp / 1000 + 42)
    assert (await inspector.backlog(topic, "workers")).oldest_age_seconds == pytest.approx(42.0)


async def test_a_missing_topic_has_no_backlog(url: str) -> None:
    inspector = open_inspector(url)
    stats = await inspector.backlog("in" + uuid4().hex[:8], "workers")
    assert stats.waiting == 0 and "no topic" in stats.notes[0]
