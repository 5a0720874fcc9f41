"""The SQLite ledger: the contract, several processes on one file, a locked file."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from task.errors import ConfigError, LedgerError
from task.ledger.registry import open_ledger
from task.ledger.sqlite import SqliteLedger
from task.task import Task
from tests.ledger.contract import Clock, LedgerContract


class TestSqliteLedger(LedgerContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def make_ledger(self, clock: Clock) -> SqliteLedger:
        return SqliteLedger(str(self.dir / "sub" / "ledger.db"), clock=clock)


def test_url_forms_and_options() -> None:
    assert isinstance(open_ledger("sqlite:./a/l.db"), SqliteLedger)
    assert open_ledger("sqlite:./a/l.db").path == "./a/l.db"
    assert open_ledger("sqlite:///abs/l.db?busy_timeout=250ms").path == "/abs/l.db"
    assert open_ledger("sqlite:l.db?busy_timeout=250ms").busy_timeout == 0.25  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="no file"):
        open_ledger("sqlite:")
    with pytest.raises(ConfigError, match="busy_tmeout"):
        open_ledger("sqlite:l.db?busy_tmeout=1s")


async def test_records_survive_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "l.db")
    async with SqliteLedger(path) as ledger:
        await ledger.created(Task.new("t", "x", id="a"))
    async with SqliteLedger(path) as ledger:
        assert await ledger.find("t", "a") is not None


_WRITER = textwrap.dedent("""
    import asyncio, sys
    from task.ledger.sqlite import SqliteLedger
    from task.task import Task

    async def main(path, name):
        async with SqliteLedger(path, busy_timeout=20) as ledger:
            for i in range(200):
                await ledger.created(Task.new("t", "x", id=f"{name}-{i}"))
                await ledger.started(Task.new("t", "x", id=f"shared-{i}"))
            won = 0
            for i in range(200):
                won += await ledger.claim("t", f"shared-{i}", name, 3600, older_than=0)
            print(won)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.slow
async def test_two_processes_write_one_file(tmp_path: Path) -> None:
    # Given two processes recording and claiming on one file at once
    path = str(tmp_path / "shared.db")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WRITER, path, name, stdout=subprocess.PIPE)
        for name in ("p1", "p2")
    ]
    outs = [await proc.communicate() for proc in procs]
    # Then both finished, every record is there once and each shared task was claimed once
    assert [proc.returncode for proc in procs] == [0, 0]
    assert sum(int(out) for out, _ in outs) == 200
    async with SqliteLedger(path) as ledger:
        stats = await ledger.stats("t")
        assert (stats.created, stats.started) == (400, 200)
        record = await ledger.find("t", "shared-7")
        assert record is not None and record.attempts == 1


async def test_a_locked_file_raises_a_clear_error_instead_of_hanging(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    async with SqliteLedger(str(path)) as ledger:
        await ledger.created(Task.new("t", "x", id="a"))  # creates the file and schema
    # Given another process holding the write lock
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        async with SqliteLedger(str(path), busy_timeout=0.2) as ledger:
            started = time.monotonic()
            with pytest.raises(LedgerError, match=r"locked by another process \(waited [\d.]+s, busy_timeout 0.2s\)"):
                await ledger.created(Task.new("t", "x", id="b"))
            assert time.monotonic() - started < 5
            assert await ledger.find("t", "a") is not None  # WAL: reads still work
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_an_unusable_path_raises_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    async with SqliteLedger(str(tmp_path / "file" / "l.db")) as ledger:
        with pytest.raises(LedgerError, match="cannot be used"):
            await ledger.find("t", "x")


async def test_used_after_close_raises(tmp_path: Path) -> None:
    ledger = SqliteLedger(str(tmp_path / "l.db"))
    await ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        await ledger.find("t", "x")


async def test_read_only_reads_an_existing_ledger_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    async with SqliteLedger(str(path)) as writer:
        await writer.created(Task.new("t", "x", id="a"))
        # a reader while the writer holds the file open (WAL and its -shm exist) ...
        async with open_ledger(f"sqlite:{path}", create=False) as reader:
            assert await reader.task_lists() == ["t"]
    # ... and after it closed (SQLite removed them)
    async with open_ledger(f"sqlite:{path}", create=False) as reader:
        record = await reader.find("t", "a")
        assert record is not None and record.task.info == "x"
        with pytest.raises(LedgerError, match="readonly"):
            await reader.created(Task.new("t", "x", id="b"))


async def test_read_only_on_a_missing_file_says_how_to_create_it_and_creates_nothing(tmp_path: Path) -> None:
    async with open_ledger(f"sqlite:{tmp_path}/nosuchdir/l.db", create=False) as ledger:
        with pytest.raises(ConfigError, match=r"no ledger at .*nosuchdir/l.db; create it with "
                                              r"`taskbus ledger init --ledger sqlite:.*` or check the path"):
            await ledger.task_lists()
    assert list(tmp_path.iterdir()) == []
    async with open_ledger(f"sqlite:{tmp_path}/nosuchdir/l.db") as ledger:  # the default creates
        assert await ledger.task_lists() == []
    assert (tmp_path / "nosuchdir" / "l.db").is_file()
