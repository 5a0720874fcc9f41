"""Fire keys: which cron replica fires a tick, kept in the ledger apart from tasks.

Time is the memory ledger's injected clock.
"""

from __future__ import annotations

from task.apps.fire_keys import FireKeys, key_list
from task.apps.recover import RecoverApp
from task.bus.memory import MemoryBroker, MemoryProducer
from task.ledger.memory import LedgerFault, MemoryLedger
from task.task import Task
from tests.ledger.contract import Clock


def tick(id: str = "t-01") -> Task:
    return Task.new("report", "01", id=id)


async def test_one_replica_takes_a_tick_and_keeps_it_after_the_task_is_done() -> None:
    # Given two replicas on one ledger
    ledger = MemoryLedger(clock=Clock())
    first, second = FireKeys(ledger, ttl=3600, owner="a"), FireKeys(ledger, ttl=3600, owner="b")
    # When the first takes the tick, sends its task, and a worker finishes it
    assert await first.take("rule", tick()) is True
    await ledger.created(tick())
    await ledger.done("report", "t-01")
    # Then the second, later, may not fire it, nor may the first again
    assert await second.take("rule", tick()) is False
    assert await first.take("rule", tick()) is False


async def test_a_key_given_back_after_a_failed_send_lets_another_replica_fire() -> None:
    ledger = MemoryLedger(clock=Clock())
    first, second = FireKeys(ledger, ttl=3600, owner="a"), FireKeys(ledger, ttl=3600, owner="b")
    assert await first.take("rule", tick()) is True
    await first.give_back("rule", tick())
    assert await second.take("rule", tick()) is True


async def test_a_ledger_failure_means_fire_anyway() -> None:
    ledger = MemoryLedger(clock=Clock())
    keys = FireKeys(ledger, ttl=3600)
    ledger.inject(LedgerFault.UNAVAILABLE)
    assert await keys.take("rule", tick()) is None
    assert keys.errors == 1


async def test_keys_are_no_tasks_for_recover_and_are_swept_after_their_ttl() -> None:
    # Given a fired tick: its key, and its task recorded as created, never started
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    keys = FireKeys(ledger, ttl=3600)
    assert await keys.take("rule", tick()) is True
    await ledger.created(tick())
    # When recover passes two hours later
    clock.advance(7200)
    recover = RecoverApp(ledger=ledger, producer=MemoryProducer(broker), clock=clock,
                         older_than=60, created_older_than=60)
    await recover.run_pass()
    # Then it resends the task, never the fire key
    assert [(topic, Task.from_json(body).id) for topic, body in broker.sent] == [("report", "t-01")]
    # And a sweep past the TTL deletes the key; another sweep within the hour does nothing
    assert await keys.sweep("rule", clock()) == 1
    assert [r async for r in ledger.outstanding(key_list("rule"), 0)] == []
    assert await keys.take("rule", tick("t-02")) is True
    clock.advance(7200)
    assert await keys.sweep("rule", clock() - 7200 + 60) == 0
