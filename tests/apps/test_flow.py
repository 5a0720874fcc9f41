"""``taskbus flow`` as a running app: its loop on the file bus and on JetStream (a cron tick,
a child with its parent's meta, a retry), its settings and its command line."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Self

import pytest

from task.apps.flow import FlowApp, FlowSettings
from task.bus.base import Consumer
from task.bus.memory import MemoryBroker
from task.bus.registry import open_consumer, open_producer
from task.cli import main
from task.flow.loader import WorkflowSet
from task.flow.store import Event, TaskEvent, open_store
from task.flow.store_memory import MemoryTaskStore
from task.ledger.registry import open_ledger
from task.settings import load_settings
from task.task import Task
from tests.faults.helpers import until
from tests.flow.flow_harness import TestClock, finish, memory_app, write_workflows
from tests.servers.nats import NatsServer

FIVE = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


def workflow_text(suffix: str) -> str:
    return f"""
[[phase]]
task = "load{suffix}:hourly"
rule = "cron=0 * * * *&offset=-1h"
template = "s3://bucket/{{yyyy}}/{{mm}}/{{dd}}/{{hh}}.gz"

[[phase]]
task = "report{suffix}"
dependsOn = "load{suffix}:hourly"
rule = "require={{meta:rows}}&retry_delay=30s"
retry = 1
template = "?day={{yyyy}}-{{mm}}-{{dd}}&rows={{meta:rows}}"
"""


class Reader:
    """Collects the tasks a topic receives, in the background."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.tasks: list[Task] = []
        self._job: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.consumer.start()
        self._job = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while (message := await self.consumer.msg()) is not None:
            self.tasks.append(Task.from_json(message.body))
            await message.ack()

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        if self._job is not None:
            await asyncio.wait_for(self._job, 10)


async def run_scenario(bus: str, tmp_path: Path, suffix: str) -> None:
    """Given flow running on ``bus`` with a simulated clock: the 05:00 tick sends a load,
    its completion starts the report with {meta:rows}, the report's error is retried once."""
    clock = TestClock()
    ledger_url = f"sqlite:{tmp_path / 'ledger.db'}"
    workflows = write_workflows(tmp_path / "wf", workflow_text(suffix))
    app = FlowApp(
        workflows=WorkflowSet(workflows),
        consumer=open_consumer(bus, topic=f"done{suffix}", channel="flow"),
        producer=open_producer(bus),
        ledger=open_ledger(ledger_url),
        store=open_store(ledger_url),
        failed_topic=f"failed{suffix}",
        alert_topic=f"alerts{suffix}",
        clock=clock,
        poll_interval=0.01,
    )
    done_out = open_producer(bus)
    async with app, done_out, \
            Reader(open_consumer(bus, topic=f"load{suffix}", channel="w")) as loads, \
            Reader(open_consumer(bus, topic=f"report{suffix}", channel="w")) as reports:
        runner = asyncio.create_task(app.run())
        try:
            # When the clock reaches 05:00: one load task
            clock.set(FIVE)
            await until(lambda: len(loads.tasks) == 1, "the load task")
            [load] = loads.tasks
            assert load.meta == "workflow=etl.toml&cron=2024-01-31T04&job=hourly"
            # When its worker completes it with rows: the report, same id, rows filled
            await done_out.send(f"done{suffix}", finish(load, "complete", FIVE, rows="9").to_json())
            await until(lambda: len(reports.tasks) == 1, "the report task")
            [report] = reports.tasks
            assert (report.id, report.info) == (load.id, "?day=2024-01-31&rows=9")
            # When the report fails: retried after its delay, not before
            await done_out.send(f"done{suffix}", finish(report, "error", FIVE, "oops").to_json())
            await until(lambda: app.engine.counts["retries"] == 1, "the retry scheduled")
            clock.advance(60)
            await until(lambda: len(reports.tasks) == 2, "the retry")
            assert reports.tasks[1].get_meta("retry") == "1"
        finally:
            await app.stop()
            await asyncio.wait_for(runner, 10)
    assert runner.result() == 0


async def test_flow_runs_on_the_file_bus(tmp_path: Path) -> None:
    (tmp_path / "bus").mkdir()
    await run_scenario(f"file:{tmp_path / 'bus'}?follow=1&poll=10ms", tmp_path, "")


@pytest.mark.jetstream
async def test_flow_runs_on_jetstream(jetstream_server: NatsServer, tmp_path: Path) -> None:
    await run_scenario(f"jetstream://{jetstream_server.hostport}", tmp_path,
                       "-" + uuid.uuid4().hex[:8])


def test_settings_default_the_store_to_the_ledger(tmp_path: Path) -> None:
    workflows = write_workflows(tmp_path / "wf")
    ledger = f"sqlite:{tmp_path / 'l.db'}"
    settings = load_settings(FlowSettings, None, workflow=str(workflows), bus="memory:flow-settings",
                             ledger=ledger, task_ttl="2h", retention="7d")
    app = FlowApp.from_settings(settings)
    assert app.startup["store"] == ledger
    assert app.startup["task_ttl"] == "2h"
    assert settings.retention == 7 * 86400


@pytest.mark.parametrize(("args", "error"), [
    ([], "flow needs its workflows: --workflow PATH"),
    (["--workflow", "/nonexistent/wf"], "--workflow /nonexistent/wf: no such file or directory"),
    (["--workflow", ".", "--store", "nope:x"], "unknown task store 'nope'"),
])
def test_bad_command_lines_exit_2_with_one_line(args: list[str], error: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flow", "--bus", "memory:flow-cli", *args]) == 2
    err = capsys.readouterr().err
    assert error in err
    assert err.count("\n") == 1


async def test_the_store_forgets_days_older_than_the_retention(tmp_path: Path) -> None:
    # Given a store holding a task of 40 days ago and one of today, retention 30d
    store, clock = MemoryTaskStore(), TestClock(FIVE)
    old = TaskEvent("old", "load", "", Event.CREATED, (FIVE - timedelta(days=40)).timestamp())
    new = TaskEvent("new", "load", "", Event.CREATED, FIVE.timestamp())
    await store.record([old, new])
    app = memory_app(MemoryBroker(), write_workflows(tmp_path / "wf"), clock, store=store,
                     retention=30 * 86400)
    # When flow runs
    async with app:
        runner = asyncio.create_task(app.run())
        try:
            await until(lambda: app.retention.removed == 1, "the clean-up")
            # Then the old day is gone, today's task kept
            assert await store.chain("old") == []
            assert [e.id for e in await store.chain("new")] == ["new"]
        finally:
            await app.stop()
            await asyncio.wait_for(runner, 10)
