"""``taskbus ledger init|ls|show|stats`` through the command line, on a SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.apps.ledger_admin import ACTIONS, LedgerAdmin
from task.cli import main
from task.ledger.base import ScheduleKind
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.task import Task


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A ledger with a task created 2 minutes ago, one started 30 s ago, one scheduled."""
    path = str(tmp_path / "ledger.db")

    async def fill() -> None:
        async with SqliteLedger(path, clock=lambda: time.time() - 125) as ledger:
            await ledger.created(Task.new("fetch", "old", id="a"))
        async with SqliteLedger(path, clock=lambda: time.time() - 30) as ledger:
            await ledger.started(Task.new("load", "running", id="b"))
            await ledger.schedule(Task.new("load", "later", id="c"), None, datetime.now(UTC),
                                  topic="load", kind=ScheduleKind.RETRY)

    asyncio.run(fill())
    return f"sqlite:{path}"


def ledger(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["ledger", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_init_is_safe_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:{tmp_path}/new/ledger.db"
    for _ in range(2):
        status, out, _ = ledger(capsys, "init", "--ledger", url)
        assert status == 0 and "ready" in out
    assert ledger(capsys, "stats", "--ledger", url)[:2] == (0, "the ledger is empty\n")
    assert ledger(capsys, "init", "--ledger", "memory:")[0] == 0


def test_ls_shows_outstanding_and_scheduled_tasks_with_units(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = ledger(capsys, "ls", "--ledger", db)
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == ["TASK_LIST", "ID", "STATE", "ATTEMPTS", "AGE", "WHEN", "OWNER", "SENDS"]
    assert lines[1].split()[:4] == ["fetch", "a", "created", "0"] and lines[1].split()[4].startswith("2m")
    assert lines[1].split()[5] == "idle" and lines[1].split()[6].startswith("2m")
    assert lines[2].split()[:3] == ["load", "b", "started"]
    assert lines[3].split()[:3] == ["load", "c", "scheduled"] and "due " in lines[3]  # the scheduled retry
    status, out, _ = ledger(capsys, "ls", "load", "--ledger", db, "--json")
    running, waiting = json.loads(out)
    assert (running["id"], running["state"], running["task"]["info"]) == ("b", "started", "running")
    assert 29 <= running["idle"] < 60
    assert (waiting["id"], waiting["state"], waiting["task"]["info"]) == ("c", "scheduled", "later")
    assert (waiting["kind"], waiting["topic"]) == ("retry", "load")
    # --older-than takes a duration; scheduled tasks are not idle, so they are left out
    for older_than in ("60", "1m"):
        idle = json.loads(ledger(capsys, "ls", "--ledger", db, "--older-than", older_than, "--json")[1])
        assert [r["id"] for r in idle] == ["a"]


async def test_ls_prints_every_duration_with_a_unit(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a ledger at a fixed time: a task created 10 min ago and idle for 5, two retries
    now = 1_800_000_000.0
    clock = {"now": now - 600}
    memory = MemoryLedger(clock=lambda: clock["now"])
    await memory.created(Task.new("fetch", "x", id="a"))
    clock["now"] = now - 300
    await memory.touch("fetch", "a")
    await memory.schedule(Task.new("fetch", "y", id="r1"), None, datetime.fromtimestamp(now + 30, UTC),
                          topic="fetch", kind=ScheduleKind.RETRY)
    await memory.schedule(Task.new("fetch", "z", id="r2"), None, datetime.fromtimestamp(now - 90, UTC),
                          topic="fetch", kind=ScheduleKind.RETRY)
    clock["now"] = now
    # When an operator lists it
    assert await LedgerAdmin(ledger=memory, action="ls", clock=lambda: now).run() == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    # Then ages say their unit, and each retry says when it is due
    assert rows == [
        ["fetch", "a", "created", "0", "10m", "idle", "5m", "-", "-"],
        ["fetch", "r2", "scheduled", "-", "-", "due", "1m30s", "ago", "-", "retry:fetch"],
        ["fetch", "r1", "scheduled", "-", "-", "due", "in", "30s", "-", "retry:fetch"],
    ]


def test_ledger_alone_lists_its_actions(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["--ledger", "memory:"]):
        status, out, err = ledger(capsys, *argv)
        assert status == 2 and out == "" and "Traceback" not in err
        listed = [line.split()[0] for line in err.splitlines() if line.startswith("  ")]
        assert listed == ["init", "ls", "show", "stats"] == list(ACTIONS)


@pytest.mark.parametrize("argv", [["ls"], ["show", "a"], ["stats"]])
def test_reading_a_missing_ledger_is_exit_2_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = ledger(capsys, *argv, "--ledger", "sqlite:./nosuchdir/l.db")
    assert status == 2 and out == ""
    assert err.strip() == ("taskbus: no ledger at ./nosuchdir/l.db; create it with "
                           "`taskbus ledger init --ledger sqlite:./nosuchdir/l.db` or check the path")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_file_that_is_not_a_ledger_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("not a database, just words" * 10)
    status, _, err = ledger(capsys, "ls", "--ledger", f"sqlite:{tmp_path}/notes.txt")
    assert status == 2 and "is not a SQLite ledger" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty.db").touch()
    status, _, err = ledger(capsys, "stats", "--ledger", f"sqlite:{tmp_path}/empty.db")
    assert status == 2 and "has no ledger tables" in err and "taskbus ledger init" in err


def test_show_one_record_and_a_missing_one(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = ledger(capsys, "show", "a", "--ledger", db)
    assert status == 0 and "task_list: fetch" in out and '"info": "old"' in out
    status, out, _ = ledger(capsys, "show", "a", "--ledger", db, "--json")
    task = json.loads(out)["task"]
    assert (task["type"], task["info"], task["id"]) == ("fetch", "old", "a")
    status, out, err = ledger(capsys, "show", "nope", "--ledger", db)
    assert status == 1 and err.strip() == "taskbus ledger show: no outstanding record for task id 'nope'"


def test_stats_per_task_list(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = ledger(capsys, "stats", "--ledger", db, "--json")
    stats = {s["task_list"]: s for s in json.loads(out)}
    assert status == 0 and set(stats) == {"fetch", "load"}
    assert (stats["load"]["started"], stats["load"]["scheduled"]) == (1, 1)
    assert 124 <= stats["fetch"]["oldest_age"] < 200
    status, out, _ = ledger(capsys, "stats", "fetch", "--ledger", db)
    assert out.splitlines()[1].split()[:4] == ["fetch", "1", "0", "0"]


@pytest.mark.parametrize(("argv", "problem"), [
    (["ls"], "needs --ledger"),
    (["frobnicate", "--ledger", "memory:"], "unknown ledger action 'frobnicate'"),
    (["show", "--ledger", "memory:"], "needs a task id"),
    (["ls", "--ledger", "postgres://x"], "unknown ledger 'postgres'"),
    (["init", "--ledger", "cassandra://127.0.0.1:1/ks", "--replication", "lots"], "dc1:3"),
    (["ls", "--ledger", "memory:", "--older-than", "soon"], "not a duration"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = ledger(capsys, *argv)
    assert status == 2 and problem in err and len(err.strip().splitlines()) == 1
