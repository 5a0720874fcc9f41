"""The flow engine on the memory bus with a simulated clock: cron phases, children with
their parent's meta, retries in the ledger, the failed topic and alerts, incomplete tasks,
files, and tasks flow must leave alone.

Each test narrates Given / When / Then; the clock moves by hand and ``app.tick()`` runs one
round of the app's loop, so a day passes in milliseconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from task.bus.memory import Fault, MemoryBroker
from task.flow.store import AlertKind, Event, TaskEvent
from task.flow.store_memory import MemoryTaskStore
from task.ledger.memory import MemoryLedger
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
GOLDEN = Path(__file__).parents[1] / "data" / "task_vectors.jsonl"


async def test_cron_phase_fires_and_the_completed_parent_starts_its_child_with_its_meta(tmp_path: Path) -> None:
    # Given the ETL workflow, a minute before the 05:00 tick
    broker, clock, store = MemoryBroker(), TestClock(), MemoryTaskStore()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock,
                          ledger=MemoryLedger(), store=store) as app:
        # When the clock reaches 05:00
        clock.set(FIVE)
        await app.tick()
        # Then the load task for the hour before is sent, with Go's meta
        [load] = bodies(broker, "load")
        assert load.info == "s3://bucket/2024/01/31/04.gz"
        assert load.job == "hourly"
        assert load.meta == "workflow=etl.toml&cron=2024-01-31T04&job=hourly"
        # When its worker completes it with rows=42
        clock.advance(60)
        await deliver(app, broker, finish(load, "complete", clock.now(), rows="42"))
        # Then the report starts with the parent's id and {meta:rows} filled, and the audit
        # (dependsOn the type without a job) too
        [report] = bodies(broker, "report")
        assert report.id == load.id
        assert report.info == "?day=2024-01-31&rows=42"
        assert report.meta == "workflow=etl.toml&cron=2024-01-31T04"
        [audit] = bodies(broker, "audit")
        assert (audit.id, audit.info) == (load.id, "?hour=2024-01-31T04")
        # And the store holds the whole chain
        chain = await store.chain(load.id)
        assert [(e.type, e.event) for e in chain] == [
            ("load", Event.CREATED), ("load", Event.DONE), ("report", Event.CHILD),
            ("audit", Event.CHILD)]
        assert chain[2].parent == "load:hourly"


async def test_a_parent_without_the_required_meta_starts_no_child(tmp_path: Path) -> None:
    # Given a load task that completes without rows
    broker, clock = MemoryBroker(), TestClock()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger()) as app:
        clock.set(FIVE)
        await app.tick()
        [load] = bodies(broker, "load")
        await deliver(app, broker, finish(load, "complete", clock.now()))
        # Then the report (require={meta:rows}) does not start; the audit does
        assert bodies(broker, "report") == []
        assert len(bodies(broker, "audit")) == 1
        assert app.engine.counts["not_ready"] == 1


async def test_an_error_is_retried_after_the_delay_then_failed_and_alerted(tmp_path: Path) -> None:
    # Given a report task (retry = 2, retry_delay = 30s)
    broker, clock, store = MemoryBroker(), TestClock(FIVE), MemoryTaskStore()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock,
                          ledger=MemoryLedger(), store=store) as app:
        report = Task.new("report", "?day=2024-01-31&rows=42", id="r-1",
                          meta="workflow=etl.toml&cron=2024-01-31T04")
        for attempt in (1, 2):
            # When it fails
            await deliver(app, broker, finish(report, "error", clock.now(), "disk full"))
            # Then nothing is resent before the delay
            clock.advance(29)
            await app.tick()
            assert len(bodies(broker, "report")) == attempt - 1
            # and it is resent, same id, retry=n, within 30 s + 40 % jitter
            clock.advance(13)
            await app.tick()
            report = bodies(broker, "report")[-1]
            assert (report.id, report.get_meta("retry")) == ("r-1", str(attempt))
            assert report.get_meta("workflow") == "etl.toml"
            assert report.result == ""
        # When the second retry fails too
        await deliver(app, broker, finish(report, "error", clock.now(), "disk full"))
        clock.advance(3600)
        await app.tick()
        # Then it goes to the failed topic as Go marks it, with an alert; no third retry
        assert len(bodies(broker, "report")) == 2
        [failed] = bodies(broker, "flow-failed")
        assert (failed.get_meta("retry"), failed.get_meta("retried")) == ("failed", "2")
        [alert] = bodies(broker, "flow-alerts")
        assert (alert.id, alert.get_meta("alert")) == ("r-1", "error")
        assert "failed after 2 retries: disk full" in alert.msg
        [record] = await store.alerts(FIVE.date())
        assert (record.kind, record.id) == (AlertKind.ERROR, "r-1")


async def test_the_same_error_read_twice_is_retried_once(tmp_path: Path) -> None:
    # Given a failed report delivered twice (a redelivery)
    broker, clock = MemoryBroker(), TestClock(FIVE)
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger()) as app:
        report = Task.new("report", "?rows=1", id="r-2", meta="workflow=etl.toml")
        failed = finish(report, "error", clock.now(), "boom")
        await deliver(app, broker, failed)
        await deliver(app, broker, failed)
        # When the delay has passed
        clock.advance(60)
        await app.tick()
        await app.tick()
        # Then one retry went out
        assert [t.get_meta("retry") for t in bodies(broker, "report")] == ["1"]


async def test_alert_alerts_at_once_and_warn_only_records(tmp_path: Path) -> None:
    broker, clock, store = MemoryBroker(), TestClock(FIVE), MemoryTaskStore()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock,
                          ledger=MemoryLedger(), store=store) as app:
        load = Task.new("load", "x", id="a-1", job="hourly", meta="workflow=etl.toml&job=hourly")
        await deliver(app, broker, finish(load, "alert", clock.now(), "checksum mismatch"))
        await deliver(app, broker, finish(load.copy(id="w-1"), "warn", clock.now(), "slow"))
        [alert] = bodies(broker, "flow-alerts")
        assert (alert.id, alert.get_meta("alert"), alert.msg) == ("a-1", "alert", "checksum mismatch")
        assert [e.result for e in await store.chain("w-1")] == ["warn"]
        assert bodies(broker, "load") == [] and bodies(broker, "report") == []


async def test_tasks_without_workflow_meta_are_left_alone(tmp_path: Path) -> None:
    # Given a done task of a workflow type but without workflow= meta (taskbus retry's, say)
    broker, clock, store = MemoryBroker(), TestClock(FIVE), MemoryTaskStore()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock,
                          ledger=MemoryLedger(), store=store) as app:
        plain = Task.new("report", "x", id="p-1")
        await deliver(app, broker, finish(plain, "error", clock.now(), "boom"))
        await deliver(app, broker, finish(plain.copy(type="load", job="hourly"), "complete",
                                          clock.now(), rows="1"))
        clock.advance(3600)
        await app.tick()
        # Then flow neither retries, fails, alerts nor starts children, nor records it
        for topic in ("report", "audit", "flow-failed", "flow-alerts"):
            assert bodies(broker, topic) == []
        assert await store.chain("p-1") == []
        assert app.engine.counts["ignored"] == 2


async def test_a_go_task_from_the_golden_vectors_passes_through(tmp_path: Path) -> None:
    # Given a task exactly as Go's encoder wrote it (every field set)
    vectors = [json.loads(line) for line in GOLDEN.read_text("utf-8").splitlines()]
    wire = next(v for v in vectors if v["name"] == "encode_every_field_literal_utc")["output"]["json"]
    go_task = Task.from_json(wire)
    broker, clock = MemoryBroker(), TestClock(FIVE)
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger()) as app:
        # When it arrives as is (no workflow=): ignored; as a load of etl.toml: routed
        broker.publish("done", wire.encode())
        message = await app.consumer.msg()
        assert message is not None
        await app.handle_done(message)
        ours = go_task.copy(type="load", job="hourly", meta=go_task.meta + "&workflow=etl.toml")
        await deliver(app, broker, ours)
        # Then the audit child keeps the Go task's id and is Go-readable JSON
        [audit] = bodies(broker, "audit")
        assert audit.id == "5f2b6f4e-8d3a-4c41-9f0e-3c2b1a0d9e8f"
        assert audit.meta == "workflow=etl.toml"
        assert json.loads(broker.bodies("audit")[0])["type"] == "audit"
        assert app.engine.counts["ignored"] == 1


async def test_an_incomplete_task_raises_one_alert_after_the_ttl(tmp_path: Path) -> None:
    # Given the 05:00 load task sent and never done, task_ttl 4h
    broker, clock, store = MemoryBroker(), TestClock(), MemoryTaskStore()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger(),
                          store=store, task_ttl=4 * 3600) as app:
        clock.set(FIVE)
        await app.tick()
        [load] = bodies(broker, "load")
        # When less than the ttl passes: no alert
        clock.set(datetime(2024, 1, 31, 8, 59, tzinfo=UTC))
        await app.tick()
        assert [a for a in bodies(broker, "flow-alerts") if a.id == load.id] == []
        # When more than the ttl passes, and later again
        clock.set(datetime(2024, 1, 31, 9, 1, 30, tzinfo=UTC))
        await app.tick()
        clock.advance(3600)
        await app.tick()
        # Then one incomplete alert for it
        alerts = [a for a in bodies(broker, "flow-alerts") if a.id == load.id]
        assert [a.get_meta("alert") for a in alerts] == ["incomplete"]
        kinds = [a.kind for a in await store.alerts(FIVE.date()) if a.id == load.id]
        assert kinds == [AlertKind.INCOMPLETE]


async def test_a_thousand_stuck_tasks_do_not_hide_newer_incomplete_ones(tmp_path: Path) -> None:
    # Given 1,001 tasks created at midnight and never done, task_ttl 4h
    broker, clock, store = MemoryBroker(), TestClock(), MemoryTaskStore()
    midnight = datetime(2024, 1, 31, 0, 0, 30, tzinfo=UTC).timestamp()
    await store.record([TaskEvent(f"stuck-{i:04}", "load", "", Event.CREATED, midnight, workflow="etl.toml")
                        for i in range(1001)])
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger(),
                          store=store, task_ttl=4 * 3600) as app:
        # When the ttl has passed for them: an alert for every one, none left out
        clock.set(datetime(2024, 1, 31, 4, 1, tzinfo=UTC))
        assert await app.engine.check_incomplete() == 1001
        # Given a task created at 05:00 and never done either
        await store.record([TaskEvent("late", "load", "", Event.CREATED, FIVE.timestamp())])
        # When its ttl has passed: it is alerted, and the stuck ones are not again
        clock.set(datetime(2024, 1, 31, 9, 1, tzinfo=UTC))
        assert await app.engine.check_incomplete() == 1
        alerted = [a.id for a in bodies(broker, "flow-alerts") if a.get_meta("alert") == "incomplete"]
        assert len(alerted) == 1002 and len(set(alerted)) == 1002 and alerted[-1] == "late"


async def test_incomplete_tasks_first_seen_at_one_instant_are_all_alerted(tmp_path: Path) -> None:
    # Given more tasks first seen at one same instant than one read of the store returns
    broker, clock, store = MemoryBroker(), TestClock(), MemoryTaskStore()
    await store.record([TaskEvent(f"same-{i:04}", "load", "", Event.CREATED, FIVE.timestamp())
                        for i in range(2500)])
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger(),
                          store=store, task_ttl=4 * 3600) as app:
        # When their ttl has passed: each is alerted once
        clock.set(datetime(2024, 1, 31, 9, 0, 30, tzinfo=UTC))
        assert await app.engine.check_incomplete() == 2500
        assert await app.engine.check_incomplete() == 0


async def test_a_file_starts_the_phases_its_path_matches(tmp_path: Path) -> None:
    # Given a files topic carrying Go stat.Stats JSON
    broker, clock, store = MemoryBroker(), TestClock(FIVE), MemoryTaskStore()
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock,
                          ledger=MemoryLedger(), store=store) as app:
        assert app.files_consumer is not None
        for path in ("s3://landing/2024/01/30/a.csv", "s3://elsewhere/b.csv"):
            broker.publish("files", json.dumps({"path": path, "size": 10,
                                                "created": "2024-01-31T05:00:00Z"}).encode())
            message = await app.files_consumer.msg()
            assert message is not None
            await app.handle_file(message)
        # Then one landing task, its time from the path, Go's file meta
        [landing] = bodies(broker, "landing")
        assert landing.info == "s3://landing/2024/01/30/a.csv?day=2024-01-30"
        meta = landing.meta_values()
        assert meta["file"] == ["s3://landing/2024/01/30/a.csv"]
        assert meta["filename"] == ["a.csv"]
        assert meta["workflow"] == ["etl.toml"]
        [first, second] = await store.files(FIVE.date())
        assert first.task_ids == (landing.id,) and second.task_ids == ()


async def test_a_child_the_bus_refused_starts_when_the_done_task_comes_back(tmp_path: Path) -> None:
    # Given a completed load whose child the bus refuses to take
    broker, clock = MemoryBroker(), TestClock(FIVE)
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger()) as app:
        load = Task.new("load", "x", id="l-1", job="hourly", meta="workflow=etl.toml&job=hourly")
        done = finish(load, "complete", clock.now(), rows="1")
        broker.inject(Fault.SEND_FAILS)
        await deliver(app, broker, done)
        # Then the done task is given back to the bus, not acknowledged
        assert app.counts["nacked"] == 1
        assert bodies(broker, "report") == []
        # When it comes back: its children start, once each
        await deliver(app, broker, done)
        assert [t.id for t in bodies(broker, "report")] == ["l-1"]
        assert [t.id for t in bodies(broker, "audit")] == ["l-1"]
