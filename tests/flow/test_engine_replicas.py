"""Flow on a SQLite ledger and store (one file, as by default): a retry survives a restart
of flow in the middle of its wait, and two replicas on one ledger fire a cron tick and start
a child once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from task.apps.flow import FlowApp
from task.bus.memory import MemoryBroker
from task.flow.store import Event, open_store
from task.ledger.registry import open_ledger
from task.task import Task
from tests.flow.flow_harness import (
    TestClock,
    bodies,
    deliver,
    finish,
    memory_app,
    write_workflows,
)

FIVE = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


def sqlite_app(broker: MemoryBroker, workflows: Path, clock: TestClock, db: Path, owner: str) -> FlowApp:
    url = f"sqlite:{db}"
    return memory_app(broker, workflows, clock, ledger=open_ledger(url), store=open_store(url),
                      owner=owner)


async def test_a_retry_survives_a_restart_in_the_middle_of_its_wait(tmp_path: Path) -> None:
    # Given a flow on a SQLite ledger that took a failed report (retry_delay 30s)
    broker, clock, db = MemoryBroker(), TestClock(FIVE), tmp_path / "ledger.db"
    workflows = write_workflows(tmp_path / "wf")
    report = Task.new("report", "?rows=1", id="r-1", meta="workflow=etl.toml")
    async with sqlite_app(broker, workflows, clock, db, "a") as first:
        await deliver(first, broker, finish(report, "error", clock.now(), "timeout"))
        await first.tick()
        assert bodies(broker, "report") == []
    # When flow restarts and the delay passes
    clock.advance(45)
    async with sqlite_app(broker, workflows, clock, db, "b") as second:
        await second.tick()
        # Then the retry is sent by the new process, and the store kept the chain
        [again] = bodies(broker, "report")
        assert (again.id, again.get_meta("retry")) == ("r-1", "1")
        events = [e.event for e in await second.store.chain("r-1")]
        assert events == [Event.DONE, Event.RETRIED]


async def test_two_replicas_fire_a_cron_tick_and_a_child_once(tmp_path: Path) -> None:
    # Given two flow replicas on one ledger and one bus
    broker, clock, db = MemoryBroker(), TestClock(), tmp_path / "ledger.db"
    workflows = write_workflows(tmp_path / "wf")
    async with sqlite_app(broker, workflows, clock, db, "a") as one, \
            sqlite_app(broker, workflows, clock, db, "b") as two:
        # When both reach the 05:00 tick
        clock.set(FIVE)
        await one.tick()
        await two.tick()
        # Then one load task went out
        [load] = bodies(broker, "load")
        assert one.engine.counts["fired_elsewhere"] + two.engine.counts["fired_elsewhere"] == 1
        # When both read the load's done task (a redelivery to the other replica)
        done = finish(load, "complete", clock.now(), rows="7")
        await deliver(one, broker, done)
        await deliver(two, broker, done)
        # Then the report and the audit started once each
        assert [t.id for t in bodies(broker, "report")] == [load.id]
        assert [t.id for t in bodies(broker, "audit")] == [load.id]
