"""The memory inspector, inside the process that holds the broker (a worker's /stats)."""

from __future__ import annotations

from uuid import uuid4

from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.inspect import open_inspector
from task.inspect.memory import MemoryInspector
from task.task import Task


def body(i: int) -> bytes:
    return Task.new("nop", f"task {i}", id=f"t{i}").to_json()


async def test_backlog_counts_waiting_in_flight_and_redelivered() -> None:
    # Given 5 tasks and a worker holding 2, one of which it gave back
    broker = MemoryBroker()
    async with MemoryProducer(broker) as producer:
        for i in range(5):
            await producer.send("nop", body(i))
    consumer = MemoryConsumer(broker, "nop", "workers")
    first, second = await consumer.msg(), await consumer.msg()
    assert first is not None and second is not None
    await first.nack(0)
    inspector = MemoryInspector(broker)
    # Then 4 wait (one of them redelivered) and 1 is in flight
    stats = await inspector.backlog("nop", "workers")
    assert (stats.waiting, stats.in_flight, stats.redelivered) == (4, 1, 1)
    # and peek shows the queue in order, consuming nothing
    assert [Task.from_json(b).id for b in await inspector.peek("nop", 3)] == ["t2", "t3", "t4"]
    assert (await inspector.backlog("nop", "workers")).waiting == 4
    assert [(r.topic, r.waiting) for r in await inspector.topics()] == [("nop", 4)]


async def test_a_named_broker_is_found_by_url_and_unknown_topics_are_not_created() -> None:
    name = "in" + uuid4().hex[:8]
    broker = MemoryBroker.named(name)
    broker.publish("a", body(1))
    inspector = open_inspector(f"memory:{name}")
    assert (await inspector.backlog("a", "c")).waiting == 1
    assert (await inspector.backlog("b", "c")).waiting == 0
    assert await inspector.peek("b", 3) == []
    assert [r.topic for r in await inspector.topics()] == ["a"]
