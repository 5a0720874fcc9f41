"""The ledger's database locked, or not there at all, for a while under a live worker.

The ledger is the safety net, not the critical path: while it cannot be written the worker
keeps running tasks at full pace and logs the problem once; when the database is back, the
queued writes are applied, so every task a taskmaster recorded ends closed in the ledger (and
``taskbus recover`` would not resend it).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from task.ledger.sqlite import SqliteLedger
from tests.faults.helpers import (
    DoneTasks,
    Figures,
    TaskbusProcess,
    http_json,
    make_tasks,
    publish,
    suffix,
    until,
)
from tests.servers.ports import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASKS = 200


async def _record_created(db: Path, task_type: str) -> list[str]:
    """A taskmaster's part: each task recorded as created before it is sent."""
    tasks = make_tasks(task_type, TASKS, "sleep=1ms")
    async with SqliteLedger(str(db)) as ledger:
        for task in tasks:
            await ledger.created(task)
    return [t.id for t in tasks]


async def _outstanding(db: Path, task_type: str) -> list[str]:
    async with SqliteLedger(str(db), busy_timeout=1.0) as ledger:
        return [r.task.id async for r in ledger.outstanding(task_type, 0)]


async def _pending_writes(port: int) -> int:
    stats = await http_json(port)
    return int(stats["ledger"]["pending_writes"])


class _Run:
    """A worker on a followed file bus with a SQLite ledger, a status port and a done reader."""

    def __init__(self, tmp_path: Path, ledger_url: str) -> None:
        self.task_type = f"outage-{suffix()}"
        self.directory = tmp_path  # the bus directory must exist for a reader
        self.port = free_port()
        self.worker = TaskbusProcess(
            ["worker", "nop", "--bus", f"file:{self.directory}/?follow=1&poll=20ms&offset=1",
             "--type", self.task_type, "--done-topic", "done", "--max-in-progress", "10",
             "--ledger", ledger_url, "--status-port", str(self.port)], tmp_path / "worker.log")
        self.done = DoneTasks(f"file:{self.directory}/?follow=1&poll=20ms", "done")

    async def send(self, ids: list[str]) -> None:
        tasks = make_tasks(self.task_type, TASKS, "sleep=1ms")
        assert [t.id for t in tasks] == ids
        await publish(f"file:{self.directory}/", self.task_type, (t.to_json() for t in tasks))


async def test_a_locked_ledger_does_not_stop_the_worker_and_is_caught_up(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    run = _Run(tmp_path, f"sqlite:{db}?busy_timeout=200ms")
    ids = await _record_created(db, run.task_type)
    # Given another process holding the database's write lock
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        async with run.done:
            # When tasks arrive while it holds it
            await run.send(ids)
            # Then the worker does every one of them all the same
            await until(lambda: run.done.covers(ids), "every task done while the ledger is locked")
            # (the recorder's line: the delayed-task releaser says the ledger is locked too)
            await until(lambda: "ledger write failed" in run.worker.output()
                        and "is locked by another process" in run.worker.output(),
                        "the worker to log the locked ledger", timeout=30)
            assert await _pending_writes(run.port) > 0  # nothing could be written yet
            assert sorted(await _outstanding(db, run.task_type)) == sorted(ids)  # WAL: reads go on
        # And once the lock is released the ledger catches up
        holder.rollback()
        await until(lambda: _pending_writes_is_zero(run.port), "the queued ledger writes applied", timeout=30)
        assert await _outstanding(db, run.task_type) == []
        # the line is logged before the last write is applied; the output is read from a pipe
        await until(lambda: "ledger is back" in run.worker.output(), "the worker saying the ledger is back")
        run.worker.terminate()
        assert await run.worker.wait() == 0, run.worker.output()
    finally:
        holder.close()
        await run.worker.close()
    Figures.of(request.node.name, "file", ids, run.done.counts, ledger="sqlite (locked)").record()


async def test_a_missing_ledger_database_does_not_stop_the_worker_and_is_caught_up(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    home = tmp_path / "ledger"
    home.mkdir()
    db = home / "ledger.db"
    run = _Run(tmp_path, f"sqlite:{db}?busy_timeout=200ms")
    ids = await _record_created(db, run.task_type)
    # Given the database gone: its directory moved away and a plain file in its place
    away = tmp_path / "ledger.away"
    home.rename(away)
    home.write_text("not a directory")
    try:
        async with run.done:
            # When tasks arrive while it is gone
            await run.send(ids)
            # Then the worker does every one of them and says the ledger cannot be used
            await until(lambda: run.done.covers(ids), "every task done while the ledger is gone")
            await until(lambda: "ledger write failed" in run.worker.output(),
                        "the worker to log the missing ledger", timeout=30)
            assert await _pending_writes(run.port) > 0
            assert sorted(await _outstanding(away / db.name, run.task_type)) == sorted(ids)
        # And once the database is back, every queued write lands
        home.unlink()
        away.rename(home)
        await until(lambda: _pending_writes_is_zero(run.port), "the queued ledger writes applied", timeout=30)
        assert await _outstanding(db, run.task_type) == []
        run.worker.terminate()
        assert await run.worker.wait() == 0, run.worker.output()
    finally:
        await run.worker.close()
    Figures.of(request.node.name, "file", ids, run.done.counts, ledger="sqlite (missing)").record()


async def _pending_writes_is_zero(port: int) -> bool:
    return await _pending_writes(port) == 0
