"""An existing ledger.db upgrades in place: from taskbus 0.2's schema, once, never downwards."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.errors import LedgerError
from task.ledger import sqlite_schema
from task.ledger.base import ScheduledTask, ScheduleKind, State
from task.ledger.registry import open_ledger
from task.ledger.sqlite import SqliteLedger
from task.task import Task

NOW = 1_800_000_000.0

#: The schema taskbus 0.2 created (task/ledger/sqlite.py at 0.2.0), copied as it was.
SCHEMA_0_2 = """
CREATE TABLE IF NOT EXISTS task_records (
    task_list TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, task TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '', claim_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (task_list, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_records_idle ON task_records (task_list, updated_at, id);
CREATE TABLE IF NOT EXISTS task_schedule (
    task_list TEXT NOT NULL, id TEXT NOT NULL, at REAL NOT NULL, task TEXT NOT NULL,
    PRIMARY KEY (task_list, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_schedule_at ON task_schedule (task_list, at, id);
"""

STARTED = Task.new("fetch", "running", id="s1")
RETRY = Task.new("fetch", "again", id="r1", meta="retry=1")
ELSEWHERE = Task.new("load", "in another list", id="r2")


def write_0_2_ledger(path: Path) -> None:
    """A ledger.db as taskbus 0.2 left it: a started record and two scheduled retries."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA_0_2)
    conn.execute(
        "INSERT INTO task_records (task_list, id, state, task, attempts, created_at, updated_at, "
        "owner, claim_until) VALUES ('fetch', 's1', 'started', ?, 1, ?, ?, 'host:1', ?)",
        (STARTED.to_json().decode(), NOW - 600, NOW - 300, NOW - 200))
    conn.executemany(
        "INSERT OR REPLACE INTO task_schedule (task_list, id, at, task) VALUES (?, ?, ?, ?)",
        [("fetch", "r1", NOW - 10, RETRY.to_json().decode()),
         ("retries", "r2", NOW + 60, ELSEWHERE.to_json().decode())])
    conn.close()


def columns(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def upgrades(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "upgraded to schema version" in r.getMessage()]


async def test_a_0_2_ledger_upgrades_in_place_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="task.ledger")
    # Given a ledger.db written by taskbus 0.2
    path = tmp_path / "ledger.db"
    write_0_2_ledger(path)
    assert user_version(path) == 0
    # When this taskbus opens it to write
    async with SqliteLedger(str(path), clock=lambda: NOW) as ledger:
        record = await ledger.find("fetch", "s1")
        # Then its records are intact
        assert record is not None
        assert (record.task, record.state, record.attempts, record.owner) == (STARTED, State.STARTED, 1, "host:1")
        assert (record.created_at, record.updated_at) == (NOW - 600, NOW - 300)
        # and its scheduled retries carry a topic (the task's type) and the kind retry
        assert await ledger.find_scheduled("retries", "r2") == ScheduledTask(
            ELSEWHERE, "retries", NOW + 60, "load", ScheduleKind.RETRY)
        assert await ledger.due("fetch", datetime.fromtimestamp(NOW, UTC), kind=ScheduleKind.RETRY) == [
            ScheduledTask(RETRY, "fetch", NOW - 10, "fetch", ScheduleKind.RETRY)]
        assert await ledger.init_schema() == f"sqlite ledger ready at {path} (schema version {sqlite_schema.VERSION})"
    assert user_version(path) == sqlite_schema.VERSION
    assert {"topic", "kind"} <= set(columns(path, "task_schedule"))
    assert upgrades(caplog) == [
        (f"ledger {path} upgraded to schema version 1: outstanding records and the schedule "
         "(the tables of taskbus 0.2)"),
        (f"ledger {path} upgraded to schema version 2: each scheduled task keeps its destination "
         "topic and its kind"),
    ]
    # And a second open changes nothing
    caplog.clear()
    async with SqliteLedger(str(path), clock=lambda: NOW) as ledger:
        assert [s.task.id for s in await ledger.scheduled("retries", 10)] == ["r2"]
    assert upgrades(caplog) == []
    assert user_version(path) == sqlite_schema.VERSION


async def test_a_new_file_gets_the_latest_schema_without_upgrade_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="task.ledger")
    path = tmp_path / "new.db"
    async with SqliteLedger(str(path)) as ledger:
        assert await ledger.task_lists() == []
    assert user_version(path) == sqlite_schema.VERSION
    assert upgrades(caplog) == []


async def test_rows_a_0_2_process_writes_after_the_upgrade_read_as_retries_to_their_type(
    tmp_path: Path,
) -> None:
    # Given an upgraded file, and a replica still on 0.2 that schedules a retry the old way
    path = tmp_path / "ledger.db"
    async with SqliteLedger(str(path)) as ledger:
        await ledger.task_lists()
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(SCHEMA_0_2)  # what 0.2 runs on every open: harmless on the new schema
    old.execute("INSERT OR REPLACE INTO task_schedule (task_list, id, at, task) VALUES (?, ?, ?, ?)",
                ("fetch", "r1", NOW - 1, RETRY.to_json().decode()))
    old.close()
    # Then the new code releases it as a retry bound for its task's type
    async with SqliteLedger(str(path), clock=lambda: NOW) as ledger:
        assert await ledger.due("fetch", datetime.fromtimestamp(NOW, UTC), kind=ScheduleKind.RETRY) == [
            ScheduledTask(RETRY, "fetch", NOW - 1, "fetch", ScheduleKind.RETRY)]


@pytest.mark.parametrize("create", [True, False])
async def test_a_ledger_from_a_newer_taskbus_is_refused(tmp_path: Path, create: bool) -> None:
    # Given a file a newer taskbus upgraded past what this code knows
    path = tmp_path / "ledger.db"
    async with SqliteLedger(str(path)) as ledger:
        await ledger.task_lists()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {sqlite_schema.VERSION + 1}")
    conn.commit()
    conn.close()
    # Then opening it, to write or to read, says to upgrade taskbus, and leaves it alone
    async with open_ledger(f"sqlite:{path}", create=create) as ledger:
        with pytest.raises(LedgerError, match=rf"ledger {path} has schema version "
                                              rf"{sqlite_schema.VERSION + 1}, newer than this "
                                              rf"taskbus knows \({sqlite_schema.VERSION}\): upgrade taskbus"):
            await ledger.task_lists()
    assert user_version(path) == sqlite_schema.VERSION + 1


async def test_a_read_only_open_reads_a_0_2_ledger_without_upgrading_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="task.ledger")
    # Given a 0.2 ledger that `taskbus ledger ls` looks at
    path = tmp_path / "ledger.db"
    write_0_2_ledger(path)
    async with open_ledger(f"sqlite:{path}", create=False) as ledger:
        # Then it reads the schedule as the upgrade would present it
        assert isinstance(ledger, SqliteLedger)
        assert await ledger.scheduled("fetch", 10) == [
            ScheduledTask(RETRY, "fetch", NOW - 10, "fetch", ScheduleKind.RETRY)]
        assert await ledger.find_scheduled("retries", "r2") == ScheduledTask(
            ELSEWHERE, "retries", NOW + 60, "load", ScheduleKind.RETRY)
        assert await ledger.find("fetch", "s1") is not None
    # And says how it gets upgraded, without changing the file
    assert any("any writing command or `taskbus ledger init` upgrades it" in r.getMessage()
               for r in caplog.records)
    assert user_version(path) == 0
    assert "topic" not in columns(path, "task_schedule")


async def test_a_failed_migration_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 0.2 ledger and a migration step that fails half way through
    path = tmp_path / "ledger.db"
    write_0_2_ledger(path)

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE task_schedule ADD COLUMN topic TEXT NOT NULL DEFAULT ''")
        raise sqlite3.OperationalError("disk I/O error")

    steps = (*sqlite_schema.MIGRATIONS[:-1],
             sqlite_schema.Migration(sqlite_schema.VERSION, "broken", half_done))
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", steps)
    async with SqliteLedger(str(path)) as ledger:
        with pytest.raises(LedgerError, match="disk I/O error"):
            await ledger.task_lists()
    # Then the steps before it are kept and the failed one left no trace
    assert user_version(path) == sqlite_schema.VERSION - 1
    assert "topic" not in columns(path, "task_schedule")
    monkeypatch.undo()
    async with SqliteLedger(str(path), clock=lambda: NOW) as ledger:  # and the next open finishes it
        assert [s.topic for s in await ledger.scheduled("fetch", 10)] == ["fetch"]
    assert user_version(path) == sqlite_schema.VERSION
