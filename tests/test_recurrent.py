"""Recurrent tasks: a completed task with ``every=`` comes back, due the interval after it
ended, with a new id and ``prev=``; through a real Launcher and the releaser, on the memory bus.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task import Task, Worker, completed, failed
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.delay_release import DelayReleaser
from task.errors import ConfigError
from task.launcher import Launcher, LauncherOptions
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.recurrent import Recurrence, next_run
from task.worker import TaskContext

START = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)


class Report(Worker):
    task_type = "report"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        return failed("bad input") if self.info == "fail" else completed("made")


def done(meta: str, result: str = "complete", id: str = "run-1") -> Task:
    task = Task(type="report", info="x", id=id, meta=meta)
    task.start(START)
    task.end(result, "", START + timedelta(seconds=30))
    return task


def test_next_run_is_due_the_interval_after_the_task_ended_with_a_new_id_and_prev() -> None:
    found = next_run(done("every=1h&job=daily&run_at=2026-12-01T05%3A00%3A00Z"),
                     START + timedelta(minutes=5))
    assert found is not None
    again, at = found
    assert at == START + timedelta(hours=1, seconds=30)
    assert again.id not in ("", "run-1")
    assert (again.get_meta("prev"), again.get_meta("every"), again.get_meta("job")) == ("run-1", "1h", "daily")
    assert again.get_meta("run_at") == ""  # send_delayed sets the new one
    assert (again.result, again.msg, again.started, again.ended) == ("", "", "", "")
    # the same done task read twice gives the same next run: a redelivery makes no second chain
    once = next_run(done("every=1h"), START + timedelta(minutes=1))
    twice = next_run(done("every=1h"), START + timedelta(minutes=9))
    assert once is not None and twice is not None
    assert (once[0].id, once[1]) == (twice[0].id, twice[1])


def test_only_a_complete_task_with_every_and_an_id_recurs() -> None:
    assert next_run(done("job=daily"), START) is None
    assert next_run(done("every=1h", result="error"), START) is None
    assert next_run(done("every=1h", id=""), START) is None
    for bad in ("every=soon", "every=0s"):
        with pytest.raises(ConfigError):
            next_run(done(bad), START)


async def test_a_recurrent_task_runs_again_after_its_interval_through_the_ledger() -> None:
    # Given a worker on the memory bus whose launcher sends recurrences, with a ledger
    broker, ledger = MemoryBroker(), MemoryLedger()
    now = datetime.now(UTC)
    producer = MemoryProducer(broker)
    recurrence = Recurrence(producer, ledger, topic="report", clock=lambda: now)
    launcher = Launcher(Report, MemoryConsumer(broker, "report"), producer,
                        LauncherOptions(task_type="report", topic="report"), ledger,
                        after_done=recurrence)
    first = Task.new("report", "x", meta={"every": "30m"})
    broker.publish("report", first.to_json())
    broker.publish("report", Task.new("report", "fail", meta={"every": "30m"}).to_json())
    broker.close_topic("report")
    # When both tasks have run
    await asyncio.wait_for(launcher.run(), 30)
    # Then only the completed one is scheduled again, 30 minutes after it ended, as a new task
    assert recurrence.sent == 1
    [entry] = await ledger.scheduled("report", 10)
    assert entry.task.get_meta("prev") == first.id and entry.task.id != first.id
    ended = Task.from_json(broker.bodies("done")[0]).ended_at
    assert ended is not None and entry.at == (ended + timedelta(minutes=30)).timestamp()
    assert entry.task.get_meta("run_at") == (ended + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # And the releaser sends it to the worker's topic once it is due, not before
    clock = [ended + timedelta(minutes=29)]
    releaser = DelayReleaser(ledger, MemoryProducer(broker), task_lists=["report"],
                             clock=lambda: clock[0])
    assert await releaser.release_due() == 0
    clock[0] += timedelta(minutes=1)
    assert await releaser.release_due() == 1
    assert Task.from_json(broker.bodies("report")[-1]).id == entry.task.id


async def test_a_failing_hook_never_fails_the_task_or_the_launcher(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    calls: list[str] = []

    async def broken(task: Task) -> None:
        calls.append(task.id)
        raise RuntimeError("hook bug")

    launcher = Launcher(Report, MemoryConsumer(broker, "report"), MemoryProducer(broker),
                        LauncherOptions(task_type="report", topic="report"), after_done=broken)
    tasks = [Task.new("report", str(i)) for i in range(3)]
    for task in tasks:
        broker.publish("report", task.to_json())
    broker.close_topic("report")
    caplog.set_level(logging.ERROR)
    await asyncio.wait_for(launcher.run(), 30)
    assert calls == [t.id for t in tasks]
    assert [Task.from_json(b).result for b in broker.bodies("done")] == ["complete"] * 3
    assert broker.pending("report") == 0  # every message acknowledged
    assert any("hook bug" in m for m in caplog.messages)


async def test_a_recurrence_that_cannot_be_delayed_is_one_logged_line(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    recurrence = Recurrence(MemoryProducer(broker), None)
    caplog.set_level(logging.ERROR, logger="task.recurrent")
    assert await recurrence(done("every=1h")) is None
    assert recurrence.failures == 1
    assert any("not sent again" in m and "no ledger is set" in m for m in caplog.messages)


async def test_taskbus_worker_sends_a_recurrent_task_again(tmp_path: Path) -> None:
    # Given a recurrent task on the file bus
    data = tmp_path / "data"
    data.mkdir()
    first = Task.new("nop", "x", meta={"every": "1h"})
    (data / "nop.jsonl").write_bytes(first.to_json() + b"\n")
    # When `taskbus worker` runs it with a ledger
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "task.cli", "worker", "nop", "--bus", "file:./data/",
                         "--ledger", "sqlite:./ledger.db"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    # Then its next run waits in the ledger, an hour on, chained to it by prev=
    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    [entry] = await ledger.scheduled("nop", 10)
    await ledger.close()
    assert (entry.task.get_meta("prev"), entry.topic) == (first.id, "nop")
    assert "1 delayed, next at " + entry.task.get_meta("run_at") in run.stderr
