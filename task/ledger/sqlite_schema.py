"""The SQLite ledger's schema and its migrations, so an existing ``ledger.db`` upgrades in place.

The schema version is SQLite's ``PRAGMA user_version``: 0 in a new file and in a ledger
written by taskbus 0.2, which did not set it. Opening a ledger to write applies every
migration newer than the file, in order, each in its own transaction that takes the write
lock first and reads the version again inside it: two processes opening an old file at once
upgrade it once, and a migration that fails leaves the file as it was. A file newer than this
code is refused (``LedgerError``: upgrade taskbus) instead of being written with a schema it
does not know.

Migrations only add: a process of the previous version still running against an upgraded
file writes rows the new code reads (the new columns have defaults), so replicas can be
upgraded one at a time. A read-only open never migrates (it cannot write); it reads an older
file as the migrations would present it (``schedule_columns``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from task.errors import InvalidTaskError, LedgerError
from task.task import Task

__all__ = ["MIGRATIONS", "VERSION", "Migration", "check_version", "migrate", "schedule_columns",
           "version"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``apply`` takes a file at ``version - 1`` to ``version``."""

    version: int
    #: what the step changes, for the log line of an upgrade
    what: str
    apply: Callable[[sqlite3.Connection], None]


#: The tables of taskbus 0.2 (schema version 0 in its files), exactly as it created them.
_TABLES_0_2 = (
    """CREATE TABLE IF NOT EXISTS task_records (
    task_list TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, task TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '', claim_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (task_list, id)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS task_records_idle ON task_records (task_list, updated_at, id)",
    """CREATE TABLE IF NOT EXISTS task_schedule (
    task_list TEXT NOT NULL, id TEXT NOT NULL, at REAL NOT NULL, task TEXT NOT NULL,
    PRIMARY KEY (task_list, id)
) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS task_schedule_at ON task_schedule (task_list, at, id)",
)


def _tables(conn: sqlite3.Connection) -> None:
    # IF NOT EXISTS: a 0.2 ledger already has them, a new file gets them.
    for statement in _TABLES_0_2:
        conn.execute(statement)


def _schedule_destinations(conn: sqlite3.Connection) -> None:
    # A scheduled task gets the topic it goes to and its kind. Rows of 0.2 were all retries
    # sent to their task's type (what ``taskbus retry`` did without a rule topic); the
    # defaults keep rows a 0.2 process still writes readable ('' reads as the task's type).
    conn.execute("ALTER TABLE task_schedule ADD COLUMN topic TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE task_schedule ADD COLUMN kind TEXT NOT NULL DEFAULT 'retry'")
    rows = conn.execute("SELECT task_list, id, task FROM task_schedule").fetchall()
    topics = []
    for task_list, id, body in rows:
        try:
            topics.append((Task.from_json(body).type, task_list, id))
        except InvalidTaskError:
            logger.warning("scheduled task %s (%s) is not a valid task; left as it is", id, task_list)
    conn.executemany("UPDATE task_schedule SET topic = ? WHERE task_list = ? AND id = ?", topics)


#: Every step, oldest first; the last one's version is the schema this code writes.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "outstanding records and the schedule (the tables of taskbus 0.2)", _tables),
    Migration(2, "each scheduled task keeps its destination topic and its kind", _schedule_destinations),
)
VERSION = MIGRATIONS[-1].version


def version(conn: sqlite3.Connection) -> int:
    """The schema version of the open file."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    return int(found)


def check_version(found: int, path: str) -> None:
    """Refuse a file written by a newer taskbus: this code would misread or damage it.

    Raises:
        LedgerError: ``found`` is newer than ``VERSION``.
    """
    if found > VERSION:
        raise LedgerError(
            f"ledger {path} has schema version {found}, newer than this taskbus knows "
            f"({VERSION}): upgrade taskbus (pip install -U taskbus) on this machine"
        )


def _has_tables(conn: sqlite3.Connection) -> bool:
    (found,) = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'task_records'"
    ).fetchone()
    return bool(found)


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the file open on ``conn`` (autocommit mode) to ``VERSION``; returns the version
    it had. A file at ``VERSION`` costs one read.

    Raises:
        LedgerError: the file is newer than this code.
        sqlite3.Error: a migration failed (its transaction is rolled back).
    """
    start = version(conn)
    check_version(start, path)
    if start == VERSION:
        return start
    existing = start > 0 or _has_tables(conn)
    for step in MIGRATIONS:
        if step.version <= start:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = version(conn)  # another process may have upgraded it while we waited
            check_version(current, path)
            if current < step.version:
                step.apply(conn)
                conn.execute(f"PRAGMA user_version = {step.version:d}")
                if existing:
                    logger.info("ledger %s upgraded to schema version %d: %s", path,
                                step.version, step.what)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start


def schedule_columns(found: int) -> str:
    """The ``topic, kind`` columns of ``task_schedule`` as a file of version ``found`` has
    them: constants for a file older than the columns, read without migrating it."""
    return "topic, kind" if found >= 2 else "'' AS topic, 'retry' AS kind"
