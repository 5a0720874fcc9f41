"""``taskbus cancel ID...``: one line per id, exit 0 only when every id was cancelled."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.apps.cancel import CancelApp
from task.bus.memory import MemoryBroker, MemoryProducer
from task.delayed import CancelOutcome, send_delayed
from task.errors import ConfigError
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.task import Task


def taskbus(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run([sys.executable, "-m", "task.cli", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cancel_prints_one_line_per_id_and_exits_0_only_when_all_were_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger, producer = MemoryLedger(), MemoryProducer(MemoryBroker())
    later = datetime.now(UTC) + timedelta(hours=1)
    a = await send_delayed(producer, "fetch", Task.new("fetch", "a"), later, ledger=ledger)
    b = await send_delayed(producer, "fetch", Task.new("fetch", "b"), later, ledger=ledger)
    # Cancelling both: exit 0, a line each on stdout
    assert await CancelApp(ledger=ledger, ids=[a.id, b.id], task_list="fetch").run() == 0
    out = capsys.readouterr()
    assert out.out.count("cancelled delayed task") == 2 and out.err == ""


async def test_a_cancelled_or_unknown_id_is_a_clear_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    ledger = MemoryLedger()
    sent = await send_delayed(MemoryProducer(MemoryBroker()), "fetch", Task.new("fetch", "x"),
                              datetime.now(UTC) + timedelta(hours=1), ledger=ledger)
    app = CancelApp(ledger=ledger, ids=[sent.id, sent.id, "no-such-id"])
    assert await app.run() == 1
    assert app.outcomes == [CancelOutcome.CANCELLED, CancelOutcome.UNKNOWN, CancelOutcome.UNKNOWN]
    out = capsys.readouterr()
    assert out.out.count("\n") == 1
    err = out.err.splitlines()
    assert len(err) == 2 and all(line.startswith("no delayed task ") for line in err)


def test_no_ids_is_usage() -> None:
    with pytest.raises(ConfigError, match="usage: taskbus cancel ID"):
        CancelApp(ledger=MemoryLedger(), ids=[])


async def test_taskbus_cancel_on_a_sqlite_ledger(tmp_path: Path) -> None:
    # Given a task delayed in a SQLite ledger, and one already released
    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    producer = MemoryProducer(MemoryBroker())
    now = datetime.now(UTC)
    waiting = await send_delayed(producer, "fetch", Task.new("fetch", "x"), now + timedelta(hours=1), ledger=ledger)
    gone = await send_delayed(producer, "fetch", Task.new("fetch", "y"), now - timedelta(seconds=1), ledger=ledger)
    assert [e.task.id for e in await ledger.due("fetch", now)] == [gone.id]
    await ledger.close()
    # When both are cancelled from the command line
    out = taskbus("cancel", waiting.id, gone.id, "--ledger", "sqlite:./ledger.db", cwd=tmp_path)
    # Then the waiting one is cancelled, the released one is too late: exit 1, no traceback
    assert out.returncode == 1, out.stderr
    assert out.stdout.strip() == (f"cancelled delayed task {waiting.id} of 'fetch' "
                                  f"(due {waiting.task.get_meta('run_at')}): it will not run")
    assert f"task {gone.id} of 'fetch' was released already" in out.stderr and "too late" in out.stderr
    assert "Traceback" not in out.stderr
    # And a mistyped ledger path is exit 2, one line, and creates nothing
    typo = taskbus("cancel", waiting.id, "--ledger", "sqlite:./ledgr.db", cwd=tmp_path)
    assert typo.returncode == 2 and typo.stderr.strip() == (
        "taskbus: no ledger at ./ledgr.db; check the path (the --ledger the delayed tasks were sent with)")
    assert not (tmp_path / "ledgr.db").exists()
