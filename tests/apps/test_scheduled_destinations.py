"""Scheduled tasks go where they were scheduled to go: retry releases only retries, to its
rule's topic; recover releases every kind, each to its own topic.

Time is an injected clock shared by the ledger and the apps.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from task.apps.recover import RecoverApp
from task.apps.retry import RetryApp, RetryRule
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.ledger.base import ScheduleKind
from task.ledger.memory import MemoryLedger
from task.task import Task
from tests.ledger.contract import Clock


def failed(id: str) -> bytes:
    task = Task.new("fetch", "s3://bucket/file", id=id)
    task.start()
    task.end("error", "connection reset")
    return task.to_json()


async def test_retry_schedules_to_its_rule_topic_and_leaves_other_kinds_alone() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    app = RetryApp(
        consumer=MemoryConsumer(broker, "done", "retry"), producer=MemoryProducer(broker),
        rules=[RetryRule(type="fetch", count=3, delay=10, jitter=0, topic="fetch-retries")],
        ledger=ledger, clock=lambda: clock.at(), poll_interval=0.01, rng=random.Random(7))
    # Given a delayed fetch task due now in the same task list as retries
    delayed = Task.new("fetch", "later", id="d1")
    await ledger.schedule(delayed, None, clock.at(-1), topic="fetch", kind=ScheduleKind.DELAY)
    # When a failed fetch task arrives and its retry comes due
    broker.publish("done", failed("f1"))
    message = await app.consumer.msg()
    assert message is not None
    await app.handle(message)
    scheduled = await ledger.find_scheduled("fetch", "f1")
    assert scheduled is not None
    assert (scheduled.topic, scheduled.kind) == ("fetch-retries", ScheduleKind.RETRY)
    clock.advance(3600)
    assert await app.release_due() == 1
    # Then the retry went to the rule's topic, and the delayed task was not taken for a retry
    assert [Task.from_json(b).id for b in broker.bodies("fetch-retries")] == ["f1"]
    assert broker.bodies("fetch") == []
    assert await ledger.find_scheduled("fetch", "d1") is not None


async def test_recover_releases_every_kind_each_to_its_topic() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    # Given a retry, a delayed task and a workflow step of one task list, all due
    for id, topic, kind in (("r1", "fetch-retries", ScheduleKind.RETRY),
                            ("d1", "fetch-slow", ScheduleKind.DELAY),
                            ("f1", "flow-next", ScheduleKind.FLOW)):
        await ledger.schedule(Task.new("fetch", id, id=id), None,
                              datetime.fromtimestamp(clock.now - 1, UTC), topic=topic, kind=kind)
    # When recover makes a pass (with a --topic for lost tasks)
    app = RecoverApp(ledger=ledger, producer=MemoryProducer(broker), clock=clock,
                     task_lists=["fetch"], topic="resent", owner="r1")
    assert await app.run_pass() is True
    # Then each went to the topic it was scheduled for
    for id, topic in (("r1", "fetch-retries"), ("d1", "fetch-slow"), ("f1", "flow-next")):
        assert [Task.from_json(b).id for b in broker.bodies(topic)] == [id]
    assert broker.bodies("resent") == [] and app.counts["released"] == 3
