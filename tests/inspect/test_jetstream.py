"""The JetStream inspector against a real nats-server -js: backlog numbers match what was
sent and taken, peeking consumes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest

from task.bus.jetstream import JetStreamConsumer, JetStreamOptions, JetStreamProducer, stream_name
from task.inspect import open_inspector
from task.inspect.jetstream import JetStreamInspector
from task.task import Task
from tests.servers.nats import NatsServer

pytestmark = pytest.mark.jetstream


@pytest.fixture
def topic() -> str:
    return "in" + uuid.uuid4().hex[:10]


def body(i: int) -> bytes:
    return Task.new("nop", f"task {i}", id=f"t{i}").to_json()


async def test_backlog_counts_waiting_in_flight_and_redelivered(jetstream_server: NatsServer, topic: str) -> None:
    # Given 5 tasks sent, and a worker of channel "workers" holding 2 of them unacknowledged
    url = f"jetstream://{jetstream_server.hostport}"
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as producer:
        for i in range(5):
            await producer.send(topic, body(i))
    consumer = JetStreamConsumer(options, topic, "workers", prefetch=2)
    inspector = open_inspector(url)
    try:
        async with consumer:
            first = await asyncio.wait_for(consumer.msg(), 10)
            second = await asyncio.wait_for(consumer.msg(), 10)
            assert first is not None and second is not None
            # Then 3 wait and 2 are in flight, none redelivered yet
            stats = await inspector.backlog(topic, "workers")
            assert (stats.waiting, stats.in_flight, stats.redelivered) == (3, 2, 0)
            # and peek shows the held ones too: they are not done yet
            peeked = await inspector.peek(topic, 10, "workers")
            assert [Task.from_json(b).id for b in peeked] == ["t0", "t1", "t2", "t3", "t4"]
            await first.ack()
            await second.ack()
    finally:
        await inspector.close()


async def test_a_task_delivered_again_counts_as_redelivered(jetstream_server: NatsServer, topic: str) -> None:
    # Given a worker that takes one task at a time, gives its task back and gets it again
    url = f"jetstream://{jetstream_server.hostport}"
    options = JetStreamOptions.from_url(url)
    inspector = open_inspector(url)
    try:
        async with JetStreamProducer(options) as producer, \
                JetStreamConsumer(options, topic, "workers", prefetch=1) as consumer:
            await producer.send(topic, body(0))
            first = await asyncio.wait_for(consumer.msg(), 10)
            assert first is not None
            await first.nack(0)
            again = await asyncio.wait_for(consumer.msg(), 10)
            assert again is not None and again.attempt == 2
            # When 2 more tasks come while it still holds that one
            for i in (1, 2):
                await producer.send(topic, body(i))
            # Then that task counts as in flight and redelivered; the other 2 wait
            stats = await inspector.backlog(topic, "workers")
            assert (stats.waiting, stats.in_flight, stats.redelivered) == (2, 1, 1)
            listed = await inspector.topics(prefix=topic)
            assert [(s.topic, s.channel, s.waiting, s.in_flight) for s in listed] == [
                (topic, "workers", 2, 1)
            ]
            await again.ack()
    finally:
        await inspector.close()


async def test_peek_shows_the_next_tasks_and_consumes_nothing(jetstream_server: NatsServer, topic: str) -> None:
    url = f"jetstream://{jetstream_server.hostport}"
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as producer:
        for i in range(4):
            await producer.send(topic, body(i))
    inspector = open_inspector(url)
    try:
        # A topic nobody reads: every message waits, peek starts at the first
        assert [Task.from_json(b).id for b in await inspector.peek(topic, 3)] == ["t0", "t1", "t2"]
        assert [Task.from_json(b).id for b in await inspector.peek(topic, 10)] == ["t0", "t1", "t2", "t3"]
        stats = (await inspector.topics(prefix=topic))[0]
        assert (stats.channel, stats.waiting) == ("", 4)
        # A worker then still gets every task, from the first
        async with JetStreamConsumer(options, topic, topic) as consumer:
            message = await asyncio.wait_for(consumer.msg(), 10)
            assert message is not None and Task.from_json(message.body).id == "t0"
            await message.ack()
        # and peek for its channel goes on after what it acknowledged
        assert [Task.from_json(b).id for b in await inspector.peek(topic, 10)] == ["t1", "t2", "t3"]
    finally:
        await inspector.close()


async def test_oldest_age_comes_from_the_stored_time(jetstream_server: NatsServer, topic: str) -> None:
    url = f"jetstream://{jetstream_server.hostport}"
    options = JetStreamOptions.from_url(url)
    async with JetStreamProducer(options) as producer:
        await producer.send(topic, body(0))
    probe = JetStreamInspector(options)
    try:
        jsm = await probe._manager()
        stored = (await jsm.get_msg(stream_name(topic), seq=1, subject=topic, next=True)).time
        assert isinstance(stored, datetime)
    finally:
        await probe.close()
    inspector = JetStreamInspector(options, now=lambda: stored + timedelta(seconds=42))
    try:
        assert (await inspector.backlog(topic, "never-ran")).oldest_age_seconds == 42.0
    finally:
        await inspector.close()


async def test_a_topic_never_sent_to_has_no_backlog(jetstream_server: NatsServer, topic: str) -> None:
    inspector = open_inspector(f"jetstream://{jetstream_server.hostport}")
    try:
        stats = await inspector.backlog(topic, "workers")
        assert (stats.waiting, stats.in_flight) == (0, 0)
        assert "no stream" in stats.notes[0]
        assert await inspector.peek(topic, 5) == []
    finally:
        await inspector.close()
