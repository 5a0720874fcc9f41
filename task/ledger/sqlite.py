"""The embedded ledger: one SQLite file, safe for several processes at once.

``sqlite:PATH`` (``sqlite:./taskbus-data/ledger.db``, ``sqlite:///abs/ledger.db``), option
``busy_timeout`` (default ``5s``): how long a write waits for another process's lock before
it fails with a LedgerError instead of hanging.

The file is in WAL mode, so readers never block the writer and several launchers, a
taskmaster and ``taskbus recover`` can share it. Every statement runs in one worker thread
per ledger (sqlite3 blocks), so the event loop never waits on the disk. Multi-statement
writes take the write lock up front (``BEGIN IMMEDIATE``): a read-then-write transaction
that upgrades later can fail at once under WAL when another process wrote in between.
The file, its directory and the schema are created on first use, and an older schema is
upgraded in place (``task.ledger.sqlite_schema``), except with ``create=False`` (what
``taskbus ledger ls/show/stats`` use): then the file is opened read-only (``mode=ro``) and a
missing one is a ConfigError, so looking at a mistyped path reports it instead of leaving an
empty database behind. A read-only open never upgrades: it reads an older file as it is, and
any writing command (or ``taskbus ledger init``) upgrades it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Self, TypeVar

from task.errors import ConfigError, LedgerError
from task.ledger import sqlite_schema
from task.ledger.base import LedgerRecord, ScheduledTask, ScheduleKind, State, TaskListStats
from task.ledger.common import SkipsTasksWithoutId, epoch, list_of
from task.task import Task
from task.url import parse_url

__all__ = ["SqliteLedger", "open_ledger"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: records read per round trip to the worker thread while iterating ``outstanding``
_PAGE = 500

_COLUMNS = "task, task_list, state, attempts, created_at, updated_at, owner"
_UPSERT_CREATED = """
INSERT INTO task_records (task_list, id, state, task, created_at, updated_at)
VALUES (?, ?, 'created', ?, ?, ?)
ON CONFLICT (task_list, id) DO UPDATE SET state = 'created', task = excluded.task,
    created_at = excluded.created_at, updated_at = excluded.updated_at, owner = '', claim_until = 0
"""


def _record(row: tuple[str, str, str, int, float, float, str]) -> LedgerRecord:
    task, task_list, state, attempts, created_at, updated_at, owner = row
    return LedgerRecord(Task.from_json(task), task_list, State(state), attempts, created_at, updated_at, owner)


def _fetch_all(sql: str, args: tuple[object, ...], conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(sql, args).fetchall()


def _scheduled(task_list: str, row: tuple[str, float, str, str]) -> ScheduledTask:
    body, at, topic, kind = row
    task = Task.from_json(body)
    # '' is a row a taskbus 0.2 process wrote after the upgrade: it sent to the task's type
    return ScheduledTask(task, task_list, at, topic or task.type, ScheduleKind(kind))


class SqliteLedger(SkipsTasksWithoutId):
    """The ledger in the SQLite file ``path``; no I/O until first use.

    ``create=False`` opens an existing ledger read-only: nothing is created, writes fail.
    """

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        create: bool = True,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.clock = clock
        self.create = create
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only in the worker thread
        #: schema version of the open file (older than the code's only when read-only)
        self._version = sqlite_schema.VERSION
        self._closed = False

    def _missing(self, what: str) -> ConfigError:
        return ConfigError(
            f"no ledger at {self.path}{what}; create it with "
            f"`taskbus ledger init --ledger sqlite:{self.path}` or check the path"
        )

    def _connect_read_only(self) -> sqlite3.Connection:
        """An existing ledger, read-only; a missing file or one without our tables is the
        user's mistake (ConfigError), not a database failure."""
        if not Path(self.path).is_file():
            raise self._missing("")
        uri = Path(self.path).absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            (tables,) = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('task_records', 'task_schedule')").fetchone()
        except sqlite3.DatabaseError as err:
            conn.close()
            if "not a database" in str(err):
                raise ConfigError(f"{self.path} is not a SQLite ledger ({err}); check the path") from err
            raise
        if tables < 2:
            conn.close()
            raise self._missing(" (the file has no ledger tables)")
        found = sqlite_schema.version(conn)
        try:
            sqlite_schema.check_version(found, self.path)
        except LedgerError:
            conn.close()
            raise
        if found < sqlite_schema.VERSION:
            logger.info("ledger %s has schema version %d (this taskbus writes %d): read as it is; "
                        "any writing command or `taskbus ledger init` upgrades it",
                        self.path, found, sqlite_schema.VERSION)
        self._version = found
        return conn

    def _connect(self) -> sqlite3.Connection:
        if not self.create and self.path != ":memory:":
            return self._connect_read_only()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: survives a process crash
                sqlite_schema.migrate(conn, self.path)
                self._version = sqlite_schema.VERSION
                return conn
            except sqlite3.OperationalError as err:
                # Switching a new file to WAL while another process does the same can fail at
                # once with "locked", without the busy handler: wait and try again.
                if "locked" not in str(err) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.02)
            except BaseException:
                conn.close()
                raise

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return work(self._conn)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the ledger's thread; sqlite errors become LedgerError."""
        if self._closed:
            raise LedgerError(f"the ledger sqlite:{self.path} is closed; open a new one")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ledger-sqlite")
        began = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)
        except sqlite3.OperationalError as err:
            if "locked" in str(err) or "busy" in str(err):
                raise LedgerError(
                    f"ledger sqlite:{self.path} is locked by another process (waited "
                    f"{time.monotonic() - began:.1f}s, busy_timeout {self.busy_timeout:g}s); look "
                    f"for a stuck process holding it, or raise busy_timeout "
                    f"(sqlite:{self.path}?busy_timeout=30s)"
                ) from err
            raise LedgerError(f"ledger sqlite:{self.path}: {err}") from err
        except (sqlite3.Error, OSError) as err:
            raise LedgerError(f"ledger sqlite:{self.path} cannot be used: {err}") from err

    @staticmethod
    def _in_write(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def created(self, task: Task, task_list: str | None = None) -> bool:
        if self._no_id(task):
            return False
        now, body, name = self.clock(), task.to_json().decode(), list_of(task, task_list)
        sql = ("INSERT INTO task_records (task_list, id, state, task, created_at, updated_at) "
               "VALUES (?, ?, 'created', ?, ?, ?) ON CONFLICT DO NOTHING")
        return await self._run(lambda c: c.execute(sql, (name, task.id, body, now, now)).rowcount == 1)

    async def started(self, task: Task, task_list: str | None = None) -> None:
        if self._no_id(task):
            return
        now, body, name = self.clock(), task.to_json().decode(), list_of(task, task_list)
        sql = ("INSERT INTO task_records (task_list, id, state, task, created_at, updated_at) "
               "VALUES (?, ?, 'started', ?, ?, ?) ON CONFLICT (task_list, id) "
               "DO UPDATE SET state = 'started', updated_at = excluded.updated_at")
        await self._run(lambda c: c.execute(sql, (name, task.id, body, now, now)))

    async def touch(self, task_list: str, id: str) -> None:
        now = self.clock()
        sql = "UPDATE task_records SET updated_at = ? WHERE task_list = ? AND id = ?"
        await self._run(lambda c: c.execute(sql, (now, task_list, id)))

    async def done(self, task_list: str, id: str) -> None:
        sql = "DELETE FROM task_records WHERE task_list = ? AND id = ?"
        await self._run(lambda c: c.execute(sql, (task_list, id)))

    async def find(self, task_list: str, id: str) -> LedgerRecord | None:
        sql = f"SELECT {_COLUMNS} FROM task_records WHERE task_list = ? AND id = ?"
        row = await self._run(lambda c: c.execute(sql, (task_list, id)).fetchone())
        return None if row is None else _record(row)

    async def outstanding(self, task_list: str, older_than: float) -> AsyncIterator[LedgerRecord]:
        # Pages by (updated_at, id), each its own short read: no transaction stays open while
        # the caller claims and resends, and records it rewrites move past the cutoff.
        cutoff = self.clock() - older_than
        sql = (f"SELECT {_COLUMNS}, id FROM task_records WHERE task_list = ? AND updated_at <= ? "
               "AND (updated_at, id) > (?, ?) ORDER BY updated_at, id LIMIT ?")
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            args = (task_list, cutoff, *after, _PAGE)
            rows = await self._run(partial(_fetch_all, sql, args))
            for row in rows:
                yield _record(row[:7])
            if len(rows) < _PAGE:
                return
            after = (rows[-1][5], rows[-1][7])

    async def claim(self, task_list: str, id: str, owner: str, ttl: float, *, older_than: float) -> bool:
        # One UPDATE: the age is re-checked in the same step that takes the record, so a
        # heartbeat landing between ``outstanding`` and here wins.
        now = self.clock()
        sql = ("UPDATE task_records SET owner = ?, claim_until = ?, attempts = attempts + 1, "
               "updated_at = ? WHERE task_list = ? AND id = ? AND claim_until <= ? AND updated_at <= ?")
        args = (owner, now + ttl, now, task_list, id, now, now - older_than)
        return await self._run(lambda c: c.execute(sql, args).rowcount == 1)

    async def schedule(
        self, task: Task, task_list: str | None, at: datetime, *, topic: str, kind: ScheduleKind
    ) -> None:
        if self._no_id(task):
            return
        args = (list_of(task, task_list), task.id, epoch(at), task.to_json().decode(), topic,
                ScheduleKind(kind).value)
        sql = ("INSERT OR REPLACE INTO task_schedule (task_list, id, at, task, topic, kind) "
               "VALUES (?, ?, ?, ?, ?, ?)")
        await self._run(lambda c: c.execute(sql, args))

    async def due(
        self, task_list: str, now: datetime, *, kind: ScheduleKind | None = None
    ) -> list[ScheduledTask]:
        limit, written = epoch(now), self.clock()
        sql = ("SELECT id, task, at, topic, kind FROM task_schedule WHERE task_list = ? AND at <= ?"
               + ("" if kind is None else " AND kind = ?") + " ORDER BY at, id")
        args = (task_list, limit) if kind is None else (task_list, limit, ScheduleKind(kind).value)

        def move(conn: sqlite3.Connection) -> list[tuple[str, float, str, str]]:
            rows = conn.execute(sql, args).fetchall()
            conn.executemany(_UPSERT_CREATED, [(task_list, r[0], r[1], written, written) for r in rows])
            conn.executemany("DELETE FROM task_schedule WHERE task_list = ? AND id = ?",
                             [(task_list, r[0]) for r in rows])
            return [r[1:] for r in rows]

        rows = await self._run(lambda c: self._in_write(c, lambda: move(c)))
        return [_scheduled(task_list, row) for row in rows]

    async def unschedule(
        self, task_list: str, id: str, *, kind: ScheduleKind | None = None
    ) -> ScheduledTask | None:
        """Remove the scheduled task ``id`` (of ``kind``, when given); what was removed, or None.

        One write transaction, as ``due`` is: a release and a cancel never both get a task.
        """
        where = "task_list = ? AND id = ?" + ("" if kind is None else " AND kind = ?")
        args: tuple[str, ...] = (task_list, id) if kind is None else (task_list, id, ScheduleKind(kind).value)

        def take(conn: sqlite3.Connection) -> tuple[str, float, str, str] | None:
            row: tuple[str, float, str, str] | None = conn.execute(
                f"SELECT task, at, topic, kind FROM task_schedule WHERE {where}", args).fetchone()
            if row is not None:
                conn.execute(f"DELETE FROM task_schedule WHERE {where}", args)
            return row

        row = await self._run(lambda c: self._in_write(c, lambda: take(c)))
        return None if row is None else _scheduled(task_list, row)

    async def scheduled(self, task_list: str, limit: int) -> list[ScheduledTask]:
        """Up to ``limit`` tasks of ``task_list`` waiting in the schedule, soonest first."""

        def read(conn: sqlite3.Connection) -> list[tuple[str, float, str, str]]:
            sql = (f"SELECT task, at, {sqlite_schema.schedule_columns(self._version)} "
                   "FROM task_schedule WHERE task_list = ? ORDER BY at, id LIMIT ?")
            return conn.execute(sql, (task_list, limit)).fetchall()

        return [_scheduled(task_list, row) for row in await self._run(read)]

    async def find_scheduled(self, task_list: str, id: str) -> ScheduledTask | None:
        """The scheduled task ``id`` of ``task_list``, or None."""

        def read(conn: sqlite3.Connection) -> tuple[str, float, str, str] | None:
            sql = (f"SELECT task, at, {sqlite_schema.schedule_columns(self._version)} "
                   "FROM task_schedule WHERE task_list = ? AND id = ?")
            row: tuple[str, float, str, str] | None = conn.execute(sql, (task_list, id)).fetchone()
            return row

        row = await self._run(read)
        return None if row is None else _scheduled(task_list, row)

    async def task_lists(self) -> list[str]:
        sql = "SELECT task_list FROM task_records UNION SELECT task_list FROM task_schedule ORDER BY 1"
        rows = await self._run(lambda c: c.execute(sql).fetchall())
        return [name for (name,) in rows]

    async def stats(self, task_list: str) -> TaskListStats:
        now = self.clock()

        def read(conn: sqlite3.Connection) -> tuple[list[tuple[str, int, float]], int]:
            states = conn.execute(
                "SELECT state, count(*), min(created_at) FROM task_records WHERE task_list = ? "
                "GROUP BY state", (task_list,)).fetchall()
            (scheduled,) = conn.execute(
                "SELECT count(*) FROM task_schedule WHERE task_list = ?", (task_list,)).fetchone()
            return states, scheduled

        states, scheduled = await self._run(read)
        counts = {state: n for state, n, _ in states}
        oldest = min((first for _, _, first in states), default=now)
        return TaskListStats(task_list, counts.get("created", 0), counts.get("started", 0),
                             scheduled, max(0.0, now - oldest))

    async def init_schema(self, replication: str = "") -> str:
        """Create the file and its tables, or upgrade an older schema (both also done on first
        use); safe to run twice."""
        await self._run(lambda c: None)
        return f"sqlite ledger ready at {self.path} (schema version {self._version})"

    async def close(self) -> None:
        """Close the file and stop the worker thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(executor, shut)
        finally:
            executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_ledger(url: str, *, create: bool = True) -> SqliteLedger:
    """``sqlite:PATH``, ``sqlite:///abs/path``; option ``busy_timeout`` (default 5s).

    ``create=False``: open an existing ledger read-only (see ``SqliteLedger``).

    Raises:
        ConfigError: no path, or an unknown or malformed option.
    """
    rest = url.partition(":")[2].partition("?")[0]
    path = rest.removeprefix("//")
    if not path:
        raise ConfigError(f"ledger URL {url!r} has no file; use sqlite:./taskbus-data/ledger.db")
    parsed = parse_url(url, default_port=0)
    parsed.check_options(["busy_timeout"])
    return SqliteLedger(path, busy_timeout=parsed.duration("busy_timeout", 5.0), create=create)
