"""The ``from_end`` consumers ``task.Client`` follows the done topic with: each reads its own
copy of what is sent after it started, and takes nothing from the topic's other readers."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest

from task.bus.base import Consumer
from task.bus.file import FileConsumer, FileOptions, FileProducer
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.servers.nats import NatsServer


async def test_memory_from_end_gets_a_copy_of_later_messages_only() -> None:
    broker = MemoryBroker()
    broker.publish("done", b"before")
    worker_side = MemoryConsumer(broker, "done")
    follower = MemoryConsumer(broker, "done", "c1", from_end=True)
    await follower.start()
    await MemoryProducer(broker).send("done", b"after")

    got = await follower.msg()
    assert got is not None and got.body == b"after"
    await got.ack()
    # the topic's own reader still gets both: the follower took nothing from it
    first, second = await worker_side.msg(), await worker_side.msg()
    assert first is not None and second is not None
    assert (first.body, second.body) == (b"before", b"after")

    await follower.stop()
    await follower.stop()  # idempotent
    broker.publish("done", b"later")
    assert broker.pending("done") == 3  # nothing is copied to a stopped follower
    assert [t for t in broker if t != "done"] == []


async def test_file_from_end_reads_only_lines_appended_after_start(tmp_path: Path) -> None:
    options = FileOptions.from_url(f"file:{tmp_path}/?follow=1&offset=0&poll=10ms")
    producer = FileProducer(options)
    await producer.send("done", b'{"type":"old"}')
    follower = FileConsumer(options, "done", "c1", from_end=True)
    await follower.start()
    await producer.send("done", b'{"type":"new"}')

    got = await follower.msg()
    assert got is not None and got.body == b'{"type":"new"}'
    await follower.stop()
    await producer.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.jsonl"]  # no offset file left


async def test_file_from_end_reads_a_file_created_after_start_from_its_beginning(tmp_path: Path) -> None:
    options = FileOptions.from_url(f"file:{tmp_path}/?follow=1&offset=0&poll=10ms")
    follower = FileConsumer(options, "done", "c1", from_end=True)
    await follower.start()
    producer = FileProducer(options)
    await producer.send("done", b'{"type":"first"}')

    got = await follower.msg()
    assert got is not None and got.body == b'{"type":"first"}'
    await follower.stop()
    await producer.stop()


async def _first_body(consumer: Consumer) -> bytes:
    message = await asyncio.wait_for(consumer.msg(), 30)
    assert message is not None
    await message.ack()
    return message.body


@pytest.mark.jetstream
async def test_jetstream_from_end_reads_later_messages_and_is_deleted_at_stop(
    jetstream_server: NatsServer,
) -> None:
    from task.bus.jetstream import (
        JetStreamConsumer,
        JetStreamOptions,
        JetStreamProducer,
        stream_name,
    )

    options = JetStreamOptions.from_url(f"jetstream://{jetstream_server.hostport}")
    topic = "done-" + uuid.uuid4().hex[:6]
    async with JetStreamProducer(options) as producer:
        await producer.send(topic, b"before")
        follower = JetStreamConsumer(options, topic, "c-" + topic, from_end=True)
        async with follower:
            await producer.send(topic, b"after")
            assert await _first_body(follower) == b"after"
            # a durable reader of the same topic still gets everything
            async with JetStreamConsumer(options, topic, "workers") as worker_side:
                assert await _first_body(worker_side) == b"before"

    client = await nats.connect(jetstream_server.url)
    try:
        names = [c.name for c in await client.jetstream().consumers_info(stream_name(topic))]
    finally:
        await client.close()
    assert names == ["workers"]  # the follower's consumer is gone


@pytest.mark.kafka
async def test_kafka_from_end_reads_only_records_sent_after_start(kafka_url: str) -> None:
    from task.bus.kafka import KafkaConsumer, KafkaOptions, KafkaProducer

    options = KafkaOptions.from_url(kafka_url + "&partitions=2")
    topic = "done-" + uuid.uuid4().hex[:6]
    async with KafkaProducer(options) as producer:
        await producer.send(topic, b"before", key="a")
        follower = KafkaConsumer(options, topic, "c-" + topic, from_end=True)
        async with follower:
            for key in ("a", "b", "c", "d"):  # over both partitions
                await producer.send(topic, b"after-" + key.encode(), key=key)
            got = {await _first_body(follower) for _ in range(4)}
    assert got == {b"after-a", b"after-b", b"after-c", b"after-d"}
