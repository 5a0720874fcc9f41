"""The task store on Cassandra: ``cassandra://host1,host2:9042/keyspace?...``, the ledger's URL.

Options and sessions are the ledger's (``task.ledger.cassandra_session``): one Cluster per
process, shared with the ledger when the URLs name the same cluster. The tables and the
reasoning behind their partitions are in ``store_cassandra_schema``. As with the ledger,
tables are never created on first use: ``init_schema`` (run by ``taskbus ledger init``)
creates them. Writes of one ``record`` call go out concurrently; Cassandra has no
transaction across partitions, so a call that failed may have kept part of its events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date
from typing import Any
from uuid import uuid4

from task.errors import LedgerError
from task.flow import store_cassandra_schema as cql
from task.flow.store import (
    AlertKind,
    AlertRecord,
    Event,
    FileRecord,
    RecapRow,
    StoreAbout,
    TaskEvent,
    TaskRow,
    day_of,
)
from task.flow.store_day_view import DayView
from task.flow.store_fold import matches, recap_rows
from task.ledger.cassandra_schema import KEYSPACE, render, replication_map
from task.ledger.cassandra_session import CassandraOptions, SessionUser, execute
from task.ledger.cassandra_upgrade import ledger_url

__all__ = ["CassandraTaskStore", "open_store", "shard_of"]

logger = logging.getLogger(__name__)

#: requests in flight at once while recording or cleaning
_CONCURRENCY = 64
#: rows above which a day is folded in a worker thread
_FOLD_IN_THREAD = 2000
#: scope of ``flow_days`` rows of days with any record (alerts, files), which clean-up reads
_KEPT = "kept"

_Key = tuple[str, str, str]


def _event(row: dict[str, Any]) -> TaskEvent:
    return TaskEvent(
        id=row["id"], type=row["type"], job=row["job"] or "", event=Event(row["event"]),
        at=row["at"], result=row["result"] or "", msg=row["msg"] or "", info=row["info"] or "",
        meta=row["meta"] or "", workflow=row["workflow"] or "", created=row["created"] or "",
        started=row["started"] or "", ended=row["ended"] or "", parent=row["parent"] or "",
        attempt=row["attempt"] or 0)


def _values(e: TaskEvent, seq: str) -> tuple[object, ...]:
    return (e.id, e.type, e.job, e.event.value, e.at, seq, e.result, e.msg, e.info, e.meta,
            e.workflow, e.created, e.started, e.ended, e.parent, e.attempt)


def shard_of(id: str) -> int:
    """The ``flow_events`` shard of a task id (stable across processes and versions)."""
    return zlib.crc32(id.encode()) % cql.SHARDS


class CassandraTaskStore(SessionUser):
    """A ``TaskStore`` in a Cassandra keyspace. No I/O until first use.

    A day is read whole once, then kept folded in memory (``DayView``, the ``views`` most
    recently used days) and caught up with the rows written since, at most every
    ``cache_seconds`` (a console page asks for rows, their count and the recap: one read)
    and at once after this process's own writes; every ``full_refresh`` seconds it is read
    whole again, which picks up a row another replica wrote later than the view's margin.
    """

    what = "task store"

    def __init__(
        self, options: CassandraOptions, *, cache_seconds: float = 2.0,
        full_refresh: float = 600.0, views: int = 3,
    ) -> None:
        super().__init__(options)
        self.cache_seconds = cache_seconds
        self.full_refresh = full_refresh
        self.views = views
        self._statements: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._day_lock = asyncio.Lock()
        #: day -> (its view, when it was read whole, when it was caught up); most recent last
        self._views: OrderedDict[date, tuple[DayView, float, float]] = OrderedDict()
        self._task_days: dict[_Key, str] = {}
        self._known_days: set[tuple[str, str]] = set()
        self._last_ns = 0

    def _prepare_all(self, session: Any) -> dict[str, Any]:
        from cassandra import ConsistencyLevel  # type: ignore[import-untyped]

        levels = ConsistencyLevel.name_to_value
        statements = {}
        for name, text in cql.STATEMENTS.items():
            statement = session.prepare(render(text, self.options.keyspace))
            level = self.options.write_consistency if name in cql.WRITES else self.options.read_consistency
            statement.consistency_level = levels[level]
            statement.is_idempotent = True  # upserts, deletes and reads: safe to run twice
            statements[name] = statement
        return statements

    def _init_hint(self) -> str:
        return f"taskbus ledger init --ledger {ledger_url(self.options)}"

    async def _ready(self) -> tuple[Any, dict[str, Any]]:
        async with self._lock:
            shared = await self._session()
            if self._statements is None:
                try:
                    statements = await asyncio.to_thread(self._prepare_all, shared.session)
                except Exception as err:
                    raise LedgerError(
                        f"Cassandra keyspace {self.options.keyspace!r} has no flow task store "
                        f"tables, or older ones ({err}); create them with: {self._init_hint()}"
                    ) from err
                row = (await execute(shared.session, statements["version_get"], (cql.SCOPE,))).one()
                found = 0 if row is None or row.get("version") is None else int(row["version"])
                if found != cql.VERSION:
                    newer = found > cql.VERSION
                    raise LedgerError(
                        f"Cassandra keyspace {self.options.keyspace} has flow store schema version "
                        f"{found}, {'newer' if newer else 'older'} than this taskbus uses "
                        f"({cql.VERSION}): " + ("upgrade taskbus" if newer else
                                                f"create or upgrade it with: {self._init_hint()}"))
                self._statements = statements
            return shared.session, self._statements

    async def _all(self, calls: list[tuple[str, tuple[object, ...]]]) -> None:
        for start in range(0, len(calls), _CONCURRENCY):
            await asyncio.gather(*(self._run(name, *params)
                                   for name, params in calls[start:start + _CONCURRENCY]))

    def _seq(self) -> str:
        # sorts in record order within this process; the tail keeps processes apart
        self._last_ns = max(self._last_ns + 1, time.time_ns())
        return f"{self._last_ns:020d}{uuid4().hex[:8]}"

    async def _days_of(self, events: Sequence[TaskEvent]) -> dict[_Key, str]:
        """The day of each task of ``events``: known, else recorded, else its first event's."""
        keys = {(e.id, e.type, e.job) for e in events}
        unknown = sorted({k[0] for k in keys if k not in self._task_days})
        found = await asyncio.gather(*(self._run("task_day_get", id) for id in unknown))
        for id, result in zip(unknown, found):
            for row in result.current_rows:
                self._task_days[(id, row["type"], row["job"] or "")] = row["day"]
        new: dict[_Key, str] = {}
        for e in sorted(events, key=lambda e: e.at):
            key = (e.id, e.type, e.job)
            if key not in self._task_days and key not in new:
                new[key] = day_of(e.at).isoformat()
        await self._all([("task_day_put", (*key, day)) for key, day in new.items()])
        self._task_days.update(new)
        days = {(cql.SCOPE, d) for d in new.values()} | {(_KEPT, d) for d in new.values()}
        await self._note_days(days)
        return {key: self._task_days[key] for key in keys}

    async def _note_days(self, days: set[tuple[str, str]]) -> None:
        fresh = days - self._known_days
        await self._all([("day_put", day) for day in sorted(fresh)])
        self._known_days |= fresh

    async def record(self, events: Sequence[TaskEvent]) -> None:
        kept = [e for e in events if e.id]
        if not kept:
            return
        days = await self._days_of(kept)
        calls: list[tuple[str, tuple[object, ...]]] = []
        for e in kept:
            day, values = days[(e.id, e.type, e.job)], _values(e, self._seq())
            calls += [("event_put", (day, shard_of(e.id), *values)), ("chain_put", (day, *values))]
        await self._all(calls)
        for day in set(days.values()):
            self._stale(date.fromisoformat(day))

    async def chain(self, id: str) -> list[TaskEvent]:
        rows = [row async for row in self._rows("chain_get", id)]
        rows.sort(key=lambda row: (row["at"], row["seq"]))
        return [_event(row) for row in rows]

    def _stale(self, day: date) -> None:
        """Catch ``day``'s view up at its next read."""
        if day in self._views:
            view, full, _ = self._views[day]
            self._views[day] = (view, full, float("-inf"))

    async def _day(self, day: date) -> list[TaskRow]:
        """The tasks of ``day``, newest first (see the class for how fresh)."""
        async with self._day_lock:  # concurrent pages of one day share one read
            now = time.monotonic()
            view, full, caught_up = self._views.pop(day, (None, now, float("-inf")))
            if view is None or now - full >= self.full_refresh:
                view, full, since = DayView(day), now, None
            elif now - caught_up >= self.cache_seconds:
                since = view.since() if view.since() > float("-inf") else None
            else:
                self._views[day] = (view, full, caught_up)
                return view.rows()
            rows: list[dict[str, Any]] = []
            for shard in range(cql.SHARDS):
                if since is None:
                    rows += [r async for r in self._rows("events_of_day", day.isoformat(), shard)]
                else:
                    rows += [r async for r in self._rows("events_since", day.isoformat(), shard, since)]
            if len(rows) > _FOLD_IN_THREAD:
                # a whole day is seconds of CPU: in a thread, the engine's loop keeps running
                await asyncio.to_thread(view.add, rows, _event)
                result = await asyncio.to_thread(view.rows)
            else:
                view.add(rows, _event)
                result = view.rows()
            self._views[day] = (view, full, now)
            while len(self._views) > self.views:
                self._views.popitem(last=False)
            return result

    async def tasks(
        self, day: date, *, type: str | None = None, job: str | None = None,
        result: str | None = None, running: bool | None = None, limit: int = 100, offset: int = 0,
    ) -> list[TaskRow]:
        rows = (r for r in await self._day(day) if matches(r, type, job, result, running))
        return list(itertools.islice(rows, offset, offset + limit))

    async def count_tasks(
        self, day: date, *, type: str | None = None, job: str | None = None,
        result: str | None = None, running: bool | None = None,
    ) -> int:
        return sum(1 for r in await self._day(day) if matches(r, type, job, result, running))

    async def recap(self, day: date) -> list[RecapRow]:
        return recap_rows(await self._day(day))

    async def _day_list(self, scope: str) -> list[date]:
        return sorted([date.fromisoformat(row["day"]) async for row in self._rows("days", scope)])

    async def days(self) -> list[date]:
        return list(reversed(await self._day_list(cql.SCOPE)))

    async def unfinished(
        self, created_before: float, *, created_after: float | None = None, limit: int = 1000
    ) -> list[TaskRow]:
        after = float("-inf") if created_after is None else created_after
        first_day = date.min if created_after is None else day_of(created_after)
        found: list[TaskRow] = []
        for day in await self._day_list(cql.SCOPE):
            if first_day <= day <= day_of(created_before):
                # a day's rows are newest first: reversed, they are in record order
                found += [r for r in reversed(await self._day(day))
                          if r.running and after <= r.first < created_before]
        found.sort(key=lambda row: row.first)  # stable: equal times keep record order
        return found[:limit]

    async def record_alert(self, alert: AlertRecord) -> None:
        day = day_of(alert.at).isoformat()
        await self._note_days({(_KEPT, day)})
        await self._run("alert_put", day, alert.at, self._seq(), alert.id, alert.type, alert.job,
                        AlertKind(alert.kind).value, alert.msg)

    async def alerts(self, day: date) -> list[AlertRecord]:
        return [AlertRecord(row["at"], row["id"], row["type"], row["job"] or "",
                            AlertKind(row["kind"]), row["msg"] or "")
                async for row in self._rows("alerts", day.isoformat())]

    async def record_file(self, file: FileRecord) -> None:
        day = day_of(file.at).isoformat()
        await self._note_days({(_KEPT, day)})
        await self._run("file_put", day, file.at, self._seq(), file.path, file.size,
                        json.dumps(list(file.phases)), json.dumps(list(file.task_ids)))

    async def files(self, day: date) -> list[FileRecord]:
        return [FileRecord(row["at"], row["path"], row["size"], tuple(json.loads(row["phases"])),
                           tuple(json.loads(row["task_ids"])))
                async for row in self._rows("files", day.isoformat())]

    async def clean(self, older_than: float) -> int:
        # Every day before the one ``older_than`` falls in has ended by then.
        removed = 0
        for day in await self._day_list(_KEPT):
            if day >= day_of(older_than):
                break
            text = day.isoformat()
            events = []
            for shard in range(cql.SHARDS):
                events += [row async for row in self._rows("events_of_day", text, shard)]
            keys = {(row["id"], row["type"], row["job"] or "") for row in events}
            await self._all([("chain_drop", (row["id"], row["at"], row["seq"])) for row in events]
                            + [("task_day_drop", key) for key in sorted(keys)])
            await self._all([("events_drop", (text, shard)) for shard in range(cql.SHARDS)]
                            + [("alerts_drop", (text,)), ("files_drop", (text,)),
                               ("day_drop", (cql.SCOPE, text)), ("day_drop", (_KEPT, text))])
            for key in keys:
                self._task_days.pop(key, None)
            self._known_days -= {(cql.SCOPE, text), (_KEPT, text)}
            self._views.pop(day, None)
            removed += len(events)
        return removed

    async def about(self) -> StoreAbout:
        """Counts every kept day's events: reads each day's partitions' sizes (for the
        about page, not for every request)."""
        rows = 0
        for day in await self._day_list(_KEPT):
            for shard in range(cql.SHARDS):
                rows += (await self._run("events_count", day.isoformat(), shard)).one()["count"]
        days = await self._day_list(cql.SCOPE)
        return StoreAbout(backend="cassandra", rows=rows, bytes=0,
                          oldest_day=days[0].isoformat() if days else None)

    async def init_schema(self, replication: str = "") -> str:
        """Create the keyspace (``replication``: ``3`` or ``dc1:3,dc2:3``) if missing and the
        flow tables; safe to run twice, and concurrently.

        Raises:
            ConfigError: a bad replication spec or keyspace name.
            LedgerError: Cassandra refused the schema.
        """
        replication_map(replication)
        ks = self.options.keyspace
        session = (await self._session()).session
        await execute(session, render(KEYSPACE, ks).replace("{replication}",
                                                            replication_map(replication)))
        for text in cql.TABLES.values():
            await execute(session, render(text, ks))
        put = await asyncio.to_thread(session.prepare, render(cql.STATEMENTS["version_put"], ks))
        await execute(session, put, (cql.SCOPE, cql.VERSION))
        return (f"Cassandra keyspace {ks}: flow task store ready ({len(cql.TABLES)} tables, "
                f"schema version {cql.VERSION})")


def open_store(url: str) -> CassandraTaskStore:
    """The store at ``url``; see ``task.ledger.cassandra_session`` for the options.

    Raises:
        ConfigError: a malformed URL or option.
    """
    options = CassandraOptions.from_url(url)
    render("", options.keyspace)  # a bad keyspace name is the user's to fix: say so now
    return CassandraTaskStore(options)
