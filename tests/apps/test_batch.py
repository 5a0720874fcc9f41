"""taskbus batch: exact ranges, steps across DST, progress, dry run, failures, the CLI."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from task.apps.batch import BatchApp, BatchPlan, BatchSettings, Progress, make_plan
from task.bus.memory import Fault, MemoryBroker, MemoryProducer
from task.cli import run_command
from task.errors import ConfigError
from task.ledger.memory import MemoryLedger
from task.settings import load_settings
from task.task import Task

NY = ZoneInfo("America/New_York")


def infos(plan: BatchPlan) -> list[str]:
    return [task.info for _, task in plan.tasks()]


def test_hourly_range_includes_both_ends() -> None:
    plan = make_plan(type="t", template="{day_slug}T{hh}", start="2024-01-31T22", end="2024-02-01T01")
    assert infos(plan) == ["2024/01/31T22", "2024/01/31T23", "2024/02/01T00", "2024/02/01T01"]
    assert plan.count() == 4


@pytest.mark.parametrize(
    ("kw", "template", "count", "first", "last"),
    [
        ({"every": "2h"}, "{hh}", 3, "00", "04"),
        ({"every": "90m"}, "{hh}:{min}", 4, "00:00", "04:30"),
        ({"every": "5400"}, "{hh}:{min}", 4, "00:00", "04:30"),  # plain numbers are seconds
        ({"every": "1h30m"}, "{hh}:{min}", 4, "00:00", "04:30"),
        ({"every": "5h"}, "{hh}", 2, "00", "05"),
        ({"every": "6h"}, "{hh}", 1, "00", "00"),
        ({"daily": True, "end": "2024-01-04T05"}, "{dd}", 4, "01", "04"),
        ({"every": "2d", "end": "2024-01-06"}, "{dd}", 3, "01", "05"),
        ({"end": ""}, "{hh}", 1, "00", "00"),
    ],
)
def test_steps(kw: dict[str, object], template: str, count: int, first: str, last: str) -> None:
    args: dict[str, object] = {"type": "t", "start": "2024-01-01", "end": "2024-01-01T05"} | kw
    plan = make_plan(template=template, **args)  # type: ignore[arg-type]
    got = infos(plan)
    assert (len(got), got[0], got[-1], plan.count()) == (count, first, last, count)


def test_daily_steps_keep_the_wall_clock_across_dst() -> None:
    # Given a daily batch at 05:00 New York time over the spring-forward weekend
    plan = make_plan(type="t", template="{ts}", start="2024-03-09T05", end="2024-03-11T05",
                     daily=True, timezone="America/New_York")
    # Then every task is at 05:00 local, though one day had only 23 hours
    assert infos(plan) == ["20240309T050000", "20240310T050000", "20240311T050000"]
    utc_hours = [at.astimezone(UTC).hour for at in plan.times()]
    assert utc_hours == [10, 9, 9]


def test_hourly_steps_count_real_hours_across_dst() -> None:
    plan = make_plan(type="t", template="{hh}", start="2024-03-10T00", end="2024-03-10T04",
                     timezone="America/New_York")
    assert infos(plan) == ["00", "01", "03", "04"]
    assert plan.count() == 4
    # And across the fall-back night, 01:00-02:00 comes twice
    plan = make_plan(type="t", template="{hh}", start="2024-11-03T00", end="2024-11-03T02",
                     timezone="America/New_York")
    assert infos(plan) == ["00", "01", "01", "02"]
    assert plan.count() == 4


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"type": ""}, "task type"),
        ({"start": ""}, "first time"),
        ({"start": "yesterday"}, "--from/--to"),
        ({"end": "2023-12-31"}, "before --from"),
        ({"every": "-1h"}, "positive"),
        ({"every": "often"}, "--every"),
        ({"timezone": "Nowhere/Land"}, "unknown time zone"),
        ({"end": "2024-02-01", "every": "1m", "max_tasks": 1000}, "44641 tasks, more than the limit 1000"),
    ],
)
def test_bad_requests_say_what_to_change(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"type": "t", "template": "x", "start": "2024-01-01"} | kw
    with pytest.raises(ConfigError, match=message):
        make_plan(**args)  # type: ignore[arg-type]


def test_relative_times() -> None:
    now = datetime(2024, 5, 5, 12, 30, tzinfo=UTC)
    plan = make_plan(type="t", template="{dd}", start="-2d", end="now", daily=True, now=now)
    assert infos(plan) == ["03", "04", "05"]


class _RecordingLedger(MemoryLedger):
    """Keeps what was recorded, for after the app closed the ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[str] = []

    async def created(self, task: Task, task_list: str | None = None) -> bool:
        self.recorded.append(f"{task_list}/{task.id}")
        return await super().created(task, task_list)


async def test_sends_every_task_and_records_it_in_the_ledger() -> None:
    broker, ledger = MemoryBroker(), _RecordingLedger()
    plan = make_plan(type="load", template="s3://b/{slug}/", start="2024-01-01T00", end="2024-01-01T09",
                     topic="loads", job="backfill", meta={"src": ["batch"]})
    progress = io.StringIO()
    app = BatchApp(plan=plan, producer=MemoryProducer(broker), ledger=ledger, progress=progress)
    assert await app.run() == 0
    sent = [Task.from_json(b) for b in broker.bodies("loads")]
    assert [t.info for t in sent] == [f"s3://b/2024/01/01/{h:02d}/" for h in range(10)]
    assert {(t.type, t.job, t.meta) for t in sent} == {("load", "backfill", "src=batch")}
    assert len({t.id for t in sent}) == 10
    assert ledger.recorded == [f"load/{t.id}" for t in sent]
    assert app.sender.ledger_errors == 0
    # Not a terminal: one plain line per tenth
    lines = progress.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1] == "load -> loads: 10/10 tasks"
    assert app.stats()["created"] == 10


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    stream = _Terminal()
    bar = Progress(4, stream, label="x")
    for _ in range(4):
        bar.advance()
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rx [") and text.endswith("\n")
    assert "[" + "#" * 30 + "] 4/4" in text


async def test_dry_run_prints_and_sends_nothing() -> None:
    broker, out = MemoryBroker(), io.StringIO()
    plan = make_plan(type="t", template="{hh}", start="2024-01-01T00", end="2024-01-01T02")
    app = BatchApp(plan=plan, producer=MemoryProducer(broker), dry_run=True, out=out)
    assert await app.run() == 0
    assert [Task.from_json(line).info for line in out.getvalue().splitlines()] == ["00", "01", "02"]
    assert broker.sent == []


async def test_bus_failure_says_where_to_resume(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    plan = make_plan(type="t", template="{hh}", start="2024-01-01T00", end="2024-01-01T05")
    app = BatchApp(plan=plan, producer=MemoryProducer(broker), progress=io.StringIO())
    broker.inject(Fault.SEND_FAILS)
    with caplog.at_level(logging.ERROR):
        assert await app.run() == 1
    assert "after 0 of 6 tasks; resume with --from 2024-01-01T00:00:00+00:00" in caplog.text


async def test_stop_ends_before_the_next_task() -> None:
    broker = MemoryBroker()
    plan = make_plan(type="t", template="{hh}", start="2024-01-01T00", end="2024-01-01T05")
    app = BatchApp(plan=plan, producer=MemoryProducer(broker), progress=io.StringIO())
    await app.stop()
    assert await app.run() == 1
    assert broker.sent == []


def test_cli_takes_from_and_to(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["batch", "--type", "t", "--template", "{day_slug}", "--from", "2024-01-30", "--to",
            "2024-02-01", "--daily", "--meta", "a=1", "--dry-run"]
    assert run_command(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(t.info, t.meta) for t in map(Task.from_json, lines)] == [
        ("2024/01/30", "a=1"), ("2024/01/31", "a=1"), ("2024/02/01", "a=1")]


def test_cli_sends_on_the_bus() -> None:
    broker = MemoryBroker.named("batch-cli-test")
    assert run_command(["batch", "--type", "t", "--template", "{hh}", "--from", "2024-01-01T00",
                        "--to", "2024-01-01T02", "--bus", "memory:batch-cli-test"]) == 0
    assert [Task.from_json(b).info for b in broker.bodies("t")] == ["00", "01", "02"]


def test_settings_build_the_plan() -> None:
    settings = load_settings(BatchSettings, None, type="t", template="{hh}", start="2024-01-01",
                             end="2024-01-01T23", every="6h", bus="memory:batch-test")
    app = BatchApp.from_settings(settings)
    assert app.total == 4 and app.plan.every == timedelta(hours=6)
    with pytest.raises(ConfigError, match="task type"):
        BatchApp.from_settings(load_settings(BatchSettings, None, start="2024-01-01"))
