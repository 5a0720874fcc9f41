"""The SQLite task store's tables and their own schema version.

The store shares a file with the ledger by default, so it never touches SQLite's ``PRAGMA
user_version`` (the ledger's: see ``task.ledger.sqlite_schema``); its version is the one row
of ``flow_schema``. Migrations run as the ledger's do: each in a transaction that takes the
write lock first and reads the version again inside it, so two processes opening the file at
once upgrade it once; a file newer than this code is refused.

Tables (every read of the console is one index range):

* ``flow_tasks``: one row per task (id, type, job), folded from its events as they are
  recorded (``store_fold`` says the rules), on the UTC ``day`` of its first event.
* ``flow_events``: every event, read by id for ``chain``.
* ``flow_days``: the days that have tasks; ``flow_alerts``, ``flow_files`` by day.
"""

from __future__ import annotations

import logging
import sqlite3

from task.errors import LedgerError

__all__ = ["VERSION", "migrate"]

logger = logging.getLogger(__name__)

_TASK_INDEXES = {
    "flow_tasks_day": "(day, first, seq)",
    # covers recap too (one index range, no table reads)
    "flow_tasks_type": "(day, type, job, first, seq, running, result, run_time, last)",
    "flow_tasks_result": "(day, result, first, seq)",
    "flow_tasks_running": "(day, running, first, seq)",
}

_V1 = (
    """CREATE TABLE flow_tasks (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL, job TEXT NOT NULL,
    day TEXT NOT NULL, first REAL NOT NULL, last REAL NOT NULL, done_at REAL,
    running INTEGER NOT NULL, result TEXT NOT NULL, msg TEXT NOT NULL, created TEXT NOT NULL,
    started TEXT NOT NULL, ended TEXT NOT NULL, run_time REAL, attempts INTEGER NOT NULL,
    info TEXT NOT NULL, workflow TEXT NOT NULL, UNIQUE (id, type, job))""",
    *(f"CREATE INDEX {name} ON flow_tasks {columns}" for name, columns in _TASK_INDEXES.items()),
    "CREATE INDEX flow_tasks_unfinished ON flow_tasks (first, seq) WHERE running = 1",
    """CREATE TABLE flow_events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL, job TEXT NOT NULL,
    event TEXT NOT NULL, at REAL NOT NULL, result TEXT NOT NULL, msg TEXT NOT NULL,
    info TEXT NOT NULL, meta TEXT NOT NULL, workflow TEXT NOT NULL, created TEXT NOT NULL,
    started TEXT NOT NULL, ended TEXT NOT NULL, parent TEXT NOT NULL, attempt INTEGER NOT NULL)""",
    "CREATE INDEX flow_events_id ON flow_events (id, at, seq)",
    "CREATE TABLE flow_days (day TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE flow_alerts (
    seq INTEGER PRIMARY KEY, day TEXT NOT NULL, at REAL NOT NULL, id TEXT NOT NULL,
    type TEXT NOT NULL, job TEXT NOT NULL, kind TEXT NOT NULL, msg TEXT NOT NULL)""",
    "CREATE INDEX flow_alerts_day ON flow_alerts (day, at, seq)",
    """CREATE TABLE flow_files (
    seq INTEGER PRIMARY KEY, day TEXT NOT NULL, at REAL NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, phases TEXT NOT NULL, task_ids TEXT NOT NULL)""",
    "CREATE INDEX flow_files_day ON flow_files (day, at, seq)",
)

#: every step's statements, oldest first; the position (from 1) is the version it makes
_MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)
VERSION = len(_MIGRATIONS)


def _version(conn: sqlite3.Connection, path: str) -> int:
    row = conn.execute("SELECT version FROM flow_schema").fetchone()
    found = 0 if row is None else int(row[0])
    if found > VERSION:
        raise LedgerError(
            f"task store {path} has flow schema version {found}, newer than this taskbus knows "
            f"({VERSION}): upgrade taskbus (pip install -U taskbus) on this machine"
        )
    return found


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the flow tables of the file open on ``conn`` (autocommit mode) to ``VERSION``.

    Raises:
        LedgerError: the file's flow tables are newer than this code.
        sqlite3.Error: a migration failed (rolled back).
    """
    conn.execute("CREATE TABLE IF NOT EXISTS flow_schema (version INTEGER NOT NULL)")
    if _version(conn, path) == VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _version(conn, path)  # another process may have upgraded it while we waited
        for version, statements in enumerate(_MIGRATIONS[found:], start=found + 1):
            for statement in statements:
                conn.execute(statement)
            logger.info("task store %s: flow schema version %d", path, version)
        conn.execute("DELETE FROM flow_schema")
        conn.execute("INSERT INTO flow_schema (version) VALUES (?)", (VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
