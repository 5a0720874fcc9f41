"""``taskbus ledger init|ls|show|stats`` through the command line, on a SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.apps.ledger_admin import age
from task.cli import main
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
            await ledger.schedule(Task.new("load", "later", id="c"), None, datetime.now(UTC))

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


def test_ls_shows_outstanding_tasks_with_age(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = ledger(capsys, "ls", "--ledger", db)
    lines = out.splitlines()
    assert status == 0 and lines[0].split() == ["TASK_LIST", "ID", "STATE", "ATTEMPTS", "AGE", "IDLE", "OWNER"]
    assert lines[1].split()[:4] == ["fetch", "a", "created", "0"] and lines[1].split()[4].startswith("2m0")
    assert lines[2].split()[:3] == ["load", "b", "started"]
    status, out, _ = ledger(capsys, "ls", "load", "--ledger", db, "--json")
    [record] = json.loads(out)
    assert (record["id"], record["state"], record["task"]["info"]) == ("b", "started", "running")
    assert 29 <= record["idle"] < 60
    assert json.loads(ledger(capsys, "ls", "--ledger", db, "--older-than", "60", "--json")[1])[0]["id"] == "a"


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
    (["--ledger", "memory:"], "say what to do"),
    (["show", "--ledger", "memory:"], "needs a task id"),
    (["ls", "--ledger", "postgres://x"], "unknown ledger 'postgres'"),
    (["init", "--ledger", "cassandra://127.0.0.1:1/ks", "--replication", "lots"], "dc1:3"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = ledger(capsys, *argv)
    assert status == 2 and problem in err and len(err.strip().splitlines()) == 1


def test_age_reads_at_a_glance() -> None:
    assert [age(s) for s in (-1, 45, 192, 7500, 3 * 86400 + 4 * 3600)] == ["0s", "45s", "3m12s", "2h05m", "3d04h"]
