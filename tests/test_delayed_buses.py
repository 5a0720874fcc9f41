"""Delayed tasks on the broker buses that run here: core NATS and Kafka through the ledger,
JetStream natively (message schedules), falling back to the ledger past the stream's max age.

The ledger path's time is an injected clock; JetStream's schedules run on the server's clock,
so its tests wait for the message (an event) and check it did not come before its time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from task.bus.base import Consumer, Producer
from task.bus.delaying import DelayingProducer
from task.bus.registry import open_consumer, open_producer
from task.credentials import Credentials
from task.delay_release import DelayReleaser
from task.delayed import send_delayed
from task.ledger.base import ScheduleKind
from task.ledger.memory import MemoryLedger
from task.task import Task
from tests.servers.nats import NatsServer, NatsServerFactory

PATIENCE = 20.0


def parts(url: str, topic: str) -> tuple[Consumer, Producer]:
    credentials = Credentials()
    return (open_consumer(url, topic=topic, channel="workers", prefetch=1, credentials=credentials),
            open_producer(url, credentials=credentials))


async def next_task(consumer: Consumer) -> Task:
    message = await asyncio.wait_for(consumer.msg(), PATIENCE)
    assert message is not None
    await message.ack()
    return Task.from_json(message.body)


async def released_through_the_ledger(url: str) -> None:
    """Given a task delayed into a ledger on a bus without native delay, a releaser whose clock
    is a second short sends nothing; at its time the consumer gets it, run_at kept."""
    topic = "delayed_" + uuid.uuid4().hex[:8]
    consumer, producer = parts(url, topic)
    ledger = MemoryLedger()
    now = datetime.now(UTC).replace(microsecond=0)
    clock: list[datetime] = [now]
    async with consumer, producer:
        assert not isinstance(producer, DelayingProducer)
        sent = await send_delayed(producer, topic, Task.new("fetch", "x"), now + timedelta(minutes=10),
                                  ledger=ledger)
        assert sent.how == "ledger"
        releaser = DelayReleaser(ledger, producer, clock=lambda: clock[0])
        clock[0] += timedelta(minutes=10, seconds=-1)
        assert await releaser.release_due() == 0
        clock[0] += timedelta(seconds=1)
        assert await releaser.release_due() == 1
        got = await next_task(consumer)
    assert got == sent.task and got.get_meta("run_at") == sent.task.get_meta("run_at")


@pytest.mark.nats
async def test_core_nats_holds_delayed_tasks_in_the_ledger(nats_server: NatsServer) -> None:
    await released_through_the_ledger(nats_server.url)


@pytest.mark.kafka
async def test_kafka_holds_delayed_tasks_in_the_ledger(kafka_url: str) -> None:
    await released_through_the_ledger(kafka_url + "&partitions=1")


def js(server: NatsServer, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"jetstream://{server.hostport}" + (f"?{query}" if query else "")


async def delivered_no_earlier_than(consumer: Consumer, at: datetime, now: Callable[[], datetime]) -> Task:
    got = await next_task(consumer)
    assert now() >= at, f"delivered at {now().isoformat()}, before its time {at.isoformat()}"
    return got


@pytest.mark.jetstream
async def test_jetstream_delays_natively_and_never_early(jetstream_server: NatsServer) -> None:
    topic = "delayed_" + uuid.uuid4().hex[:8]
    consumer, producer = parts(js(jetstream_server), topic)
    async with consumer, producer:
        assert isinstance(producer, DelayingProducer)
        # Given two tasks delayed by one and two seconds, sent in the opposite order
        now = datetime.now(UTC)
        second = await send_delayed(producer, topic, Task.new("fetch", "2"), now + timedelta(seconds=2),
                                    ledger=None)
        first = await send_delayed(producer, topic, Task.new("fetch", "1"), now + timedelta(seconds=1),
                                   ledger=None)
        assert (first.how, second.how) == ("native", "native")
        # Then each arrives at its time or later, in the order of their times, as sent
        assert await delivered_no_earlier_than(consumer, first.at, lambda: datetime.now(UTC)) == first.task
        assert await delivered_no_earlier_than(consumer, second.at, lambda: datetime.now(UTC)) == second.task
        assert producer.info()["delayed"] == 2


@pytest.mark.jetstream
async def test_jetstream_past_its_max_age_holds_the_task_in_the_ledger(jetstream_server: NatsServer) -> None:
    # A stream keeping messages 10 minutes cannot hold a task due in an hour: the ledger does
    topic = "delayed_" + uuid.uuid4().hex[:8]
    ledger = MemoryLedger()
    _, producer = parts(js(jetstream_server, max_age="10m"), topic)
    async with producer:
        sent = await send_delayed(producer, topic, Task.new("fetch", "x"),
                                  datetime.now(UTC) + timedelta(hours=1), ledger=ledger)
    assert sent.how == "ledger"
    [entry] = await ledger.scheduled("fetch", 10)
    assert (entry.task.id, entry.topic, entry.kind) == (sent.id, topic, ScheduleKind.DELAY)


@pytest.mark.jetstream
@pytest.mark.faults
async def test_a_natively_delayed_task_survives_a_server_restart(nats_servers: NatsServerFactory) -> None:
    # Given a task delayed on a JetStream server that then restarts before its time
    server = nats_servers(jetstream=True)
    topic = "delayed_" + uuid.uuid4().hex[:8]
    url = js(server, reconnect_wait="0.2s")
    _, producer = parts(url, topic)
    async with producer:
        sent = await send_delayed(producer, topic, Task.new("fetch", "x"),
                                  datetime.now(UTC) + timedelta(seconds=2), ledger=None)
    await asyncio.to_thread(server.restart)
    # Then a worker connecting afterwards gets it, not before its time
    consumer, _ = parts(url, topic)
    async with consumer:
        assert await delivered_no_earlier_than(consumer, sent.at, lambda: datetime.now(UTC)) == sent.task
