"""Delayed tasks on NSQ: ``DPUB`` on the wire (a scripted nsqd), the fall-back to the ledger
for delays nsqd will not hold, and a real nsqd when ``TASK_TEST_NSQD`` is set."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from task.bus import nsq_protocol as proto
from task.bus.delaying import DelayingProducer, NativeDelayUnavailable
from task.bus.nsq import NsqProducer, open_consumer, open_producer
from task.credentials import Credentials
from task.delayed import send_delayed
from task.ledger.base import ScheduleKind
from task.ledger.memory import MemoryLedger
from task.task import Task
from tests.bus.test_nsq_consumer import Peer

NOW = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)
NSQD = os.environ.get("TASK_TEST_NSQD", "")


@pytest.fixture
async def nsqd() -> AsyncIterator[Peer]:
    """A scripted nsqd (see tests/bus/test_nsq_consumer.py)."""
    async with Peer() as running:
        yield running


def producer_for(peer: Peer) -> NsqProducer:
    producer = open_producer(f"nsq://{peer.address}?heartbeat_interval=0", credentials=Credentials())
    producer.clock = lambda: NOW
    return producer


async def test_send_at_is_a_dpub_of_the_delay_in_milliseconds_awaiting_ok(nsqd: Peer) -> None:
    producer = producer_for(nsqd)
    assert isinstance(producer, DelayingProducer)
    sending = asyncio.create_task(producer.send_at("later", b"hi", NOW + timedelta(seconds=2.5)))
    conn = await nsqd.accept()
    await conn.handshake()
    await conn.expect(b"DPUB later 2500\n\x00\x00\x00\x02hi")
    conn.respond(proto.OK)
    await sending
    # a fraction of a millisecond is rounded up, never down: never early
    sending = asyncio.create_task(producer.send_at("later", b"hi", NOW + timedelta(microseconds=1200)))
    await conn.expect(b"DPUB later 2\n\x00\x00\x00\x02hi")
    conn.respond(proto.OK)
    await sending
    # a time in the past is delivered at once
    sending = asyncio.create_task(producer.send_at("later", b"hi", NOW - timedelta(seconds=5)))
    await conn.expect(b"DPUB later 0\n\x00\x00\x00\x02hi")
    conn.respond(proto.OK)
    await sending
    assert producer.info()["delayed"] == 3
    await producer.stop()


async def test_send_delayed_on_nsq_is_native_and_keeps_run_at(nsqd: Peer) -> None:
    producer = producer_for(nsqd)
    task = Task.new("fetch", "s3://b/k")
    # send_delayed rounds to whole seconds and counts from the real time: the delay is
    # whatever is left until then, so only the command and the body are checked here
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
    producer.clock = lambda: at - timedelta(seconds=30)
    sending = asyncio.create_task(send_delayed(producer, "fetch", task, at, ledger=None))
    conn = await nsqd.accept()
    await conn.handshake()
    held = task.copy()
    held.set_meta("run_at", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    body = held.to_json()
    await conn.expect(b"DPUB fetch 30000\n" + len(body).to_bytes(4, "big") + body)
    conn.respond(proto.OK)
    sent = await sending
    assert (sent.how, sent.id, sent.at) == ("native", task.id, at)
    await producer.stop()


async def test_a_delay_longer_than_nsqd_holds_goes_to_the_ledger_without_touching_nsqd(
    nsqd: Peer,
) -> None:
    producer, ledger = producer_for(nsqd), MemoryLedger()
    with pytest.raises(NativeDelayUnavailable, match="at most 1h"):
        await producer.send_at("later", b"x", NOW + timedelta(hours=2))
    task = Task.new("fetch", "x")
    sent = await send_delayed(producer, "fetch", task, NOW + timedelta(hours=2), ledger=ledger)
    assert sent.how == "ledger"
    [entry] = await ledger.scheduled("fetch", 10)
    assert (entry.task.id, entry.kind, entry.topic) == (task.id, ScheduleKind.DELAY, "fetch")
    await producer.stop()


async def test_nsqd_refusing_the_delay_as_out_of_range_is_native_delay_unavailable(nsqd: Peer) -> None:
    producer = producer_for(nsqd)
    sending = asyncio.create_task(producer.send_at("later", b"x", NOW + timedelta(minutes=30)))
    conn = await nsqd.accept()
    await conn.handshake()
    await conn.expect(b"DPUB later 1800000\n\x00\x00\x00\x01x")
    conn.error("E_INVALID DPUB timeout 1800000 out of range 0-900000")
    with pytest.raises(NativeDelayUnavailable, match="out of range"):
        await sending
    await producer.stop()


@pytest.mark.nsq
@pytest.mark.skipif(not NSQD, reason="set TASK_TEST_NSQD=host:port to run against a real nsqd")
async def test_a_real_nsqd_delivers_a_delayed_task_no_earlier_than_its_time() -> None:
    topic = "delayed_" + uuid.uuid4().hex[:8]
    producer = open_producer(f"nsq://{NSQD}", credentials=Credentials())
    consumer = open_consumer(f"nsq://{NSQD}?heartbeat_interval=2s", topic=topic, channel="c",
                             prefetch=1, credentials=Credentials())
    async with producer, consumer:
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        sent = await send_delayed(producer, topic, Task.new("fetch", "x"), at, ledger=None)
        assert sent.how == "native"
        message = await asyncio.wait_for(consumer.msg(), 15)
        assert message is not None
        assert datetime.now(UTC) >= at, "delivered before its time"
        assert Task.from_json(message.body).id == sent.id
        await message.ack()
