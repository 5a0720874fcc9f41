"""The production ledger on Cassandra: ``cassandra://host1,host2:9042/keyspace?...``.

The URL options and the connection are in ``cassandra_session``; every statement and the
reasoning behind the partitions in ``cassandra_schema``. Tables are not created on first use
(concurrent schema changes from many processes disagree): run ``taskbus ledger init`` once.
Records live in time buckets, found through ``task_index``; ``claim`` and ``due`` use
lightweight transactions so replicas never send one task twice. The keyspace's schema is
versioned (``cassandra_upgrade``): a ledger checks it before its first statement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from uuid import uuid4

from task.errors import LedgerError
from task.ledger import cassandra_schema as cql
from task.ledger import cassandra_upgrade
from task.ledger.base import LedgerRecord, ScheduledTask, ScheduleKind, State, TaskListStats
from task.ledger.cassandra_session import CassandraOptions, SessionUser
from task.ledger.common import SkipsTasksWithoutId, epoch, list_of
from task.task import Task

__all__ = ["CassandraLedger", "CassandraOptions", "open_ledger"]

logger = logging.getLogger(__name__)

#: the one partition of ``task_buckets``
_SCOPE = "all"
_RECORDS, _SCHEDULE = "records", "schedule"
_FAR = 2**62  # a bucket bound beyond any time


class CassandraLedger(SessionUser, SkipsTasksWithoutId):
    """The ledger in a Cassandra keyspace. No I/O until first use."""

    def __init__(self, options: CassandraOptions, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(options)
        self.clock = clock
        self._statements: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._known_buckets: set[tuple[str, str, int]] = set()

    def _prepare_all(self, session: Any) -> dict[str, Any]:
        from cassandra import ConsistencyLevel  # type: ignore[import-untyped]

        levels = ConsistencyLevel.name_to_value
        statements = {}
        for name, text in cql.STATEMENTS.items():
            statement = session.prepare(cql.render(text, self.options.keyspace))
            level = self.options.write_consistency if name in cql.WRITES else self.options.read_consistency
            if name in cql.SERIAL_READS:
                level = self.options.serial_consistency
            statement.consistency_level = levels[level]
            statement.serial_consistency_level = levels[self.options.serial_consistency]
            # the driver retries only idempotent statements (RetryTimeouts): never an IF one
            statement.is_idempotent = name not in cql.CONDITIONAL
            statements[name] = statement
        return statements

    async def _ready(self) -> tuple[Any, dict[str, Any]]:
        async with self._lock:
            shared = await self._session()
            if self._statements is None:
                await cassandra_upgrade.check(shared.session, self.options)
                try:
                    self._statements = await asyncio.to_thread(self._prepare_all, shared.session)
                except Exception as err:
                    raise LedgerError(
                        f"cannot prepare the ledger's statements in keyspace "
                        f"{self.options.keyspace!r} ({err}); create or upgrade it with: taskbus "
                        f"ledger init --ledger {cassandra_upgrade.ledger_url(self.options)}") from err
            return shared.session, self._statements

    def _bucket(self, at: float) -> int:
        return int(at // self.options.bucket)

    async def _note_bucket(self, task_list: str, kind: str, bucket: int, ttl: int) -> None:
        # Records always land in the current bucket, so caching it is safe; a schedule can
        # target a past bucket that ``due`` already dropped, so that row is always written.
        if (task_list, kind, bucket) not in self._known_buckets:
            await self._run("bucket_add", _SCOPE, task_list, kind, bucket, ttl + self.options.bucket)
            if kind == _RECORDS:
                self._known_buckets.add((task_list, kind, bucket))

    async def _index(self, task_list: str, id: str) -> int | None:
        row = (await self._run("index_get", task_list, id)).one()
        return None if row is None else int(row["bucket"])

    async def _locate(self, task_list: str, id: str, now: float, look_first: bool) -> tuple[int, bool]:
        """The task's bucket, and True when this call recorded it in the index."""
        if look_first and (found := await self._index(task_list, id)) is not None:
            return found, False
        bucket = self._bucket(now)
        await self._note_bucket(task_list, _RECORDS, bucket, self.options.ttl)
        writer = uuid4().hex  # tells our own row from another writer's if this insert runs twice
        result = await self._run("index_add", task_list, id, bucket, writer, self.options.ttl)
        if result.was_applied:
            return bucket, True
        found = result.one()  # a refused IF NOT EXISTS returns the row it found
        if found.get("writer") == writer:
            logger.info("task %s of %s: the index row is our own, written by an earlier run of "
                        "this insert; taking it as new", id, task_list)
            return int(found["bucket"]), True
        return int(found["bucket"]), False

    async def created(self, task: Task, task_list: str | None = None) -> bool:
        if self._no_id(task):
            return False
        now, name = self.clock(), list_of(task, task_list)
        bucket, new = await self._locate(name, task.id, now, look_first=False)
        if new:
            await self._run("record_put", name, bucket, task.id, "created", task.to_json().decode(),
                            0, now, now, self.options.ttl)
        return new

    async def started(self, task: Task, task_list: str | None = None) -> None:
        if self._no_id(task):
            return
        now, name = self.clock(), list_of(task, task_list)
        bucket, new = await self._locate(name, task.id, now, look_first=True)
        if not new:
            # An index row whose record write failed (the call raised, the caller retries)
            # has no record: an update would leave one without its task, never resent.
            row = (await self._run("record_get", name, bucket, task.id)).one()
            new = row is None or row.get("task") is None
        if new:
            await self._run("record_put", name, bucket, task.id, "started", task.to_json().decode(),
                            0, now, now, self.options.ttl)
        else:
            await self._run("record_started", self.options.ttl, now, name, bucket, task.id)

    async def touch(self, task_list: str, id: str) -> None:
        bucket = await self._index(task_list, id)
        if bucket is not None:
            await self._run("record_touch", self.options.ttl, self.clock(), task_list, bucket, id)

    async def done(self, task_list: str, id: str) -> None:
        bucket = await self._index(task_list, id)
        if bucket is not None:
            await self._run("record_delete", task_list, bucket, id)
            await self._run("index_delete", task_list, id)

    @staticmethod
    def _record(task_list: str, id: str, row: dict[str, Any]) -> LedgerRecord | None:
        if row.get("task") is None:  # its cells expired, or a heartbeat outlived a done
            return None
        return LedgerRecord(Task.from_json(row["task"]), task_list, State(row["state"]),
                            row["attempts"] or 0, row["created_at"], row["updated_at"], row["owner"] or "")

    async def find(self, task_list: str, id: str) -> LedgerRecord | None:
        bucket = await self._index(task_list, id)
        if bucket is None:
            return None
        row = (await self._run("record_get", task_list, bucket, id)).one()
        return None if row is None else self._record(task_list, id, row)

    async def outstanding(self, task_list: str, older_than: float) -> AsyncIterator[LedgerRecord]:
        # Oldest first within each bucket, buckets oldest first: one bucket in memory at a time.
        now = self.clock()
        cutoff = now - older_than
        buckets = [r["bucket"] async for r in self._rows(
            "buckets_until", _SCOPE, task_list, _RECORDS, self._bucket(cutoff))]
        for bucket in buckets:
            found, live = [], 0
            async for row in self._rows("records_in_bucket", task_list, bucket):
                record = self._record(task_list, row["id"], row)
                live += record is not None
                if record is not None and record.updated_at <= cutoff:
                    found.append(record)
            if not live and (bucket + 2) * self.options.bucket <= now:
                # no task can land in a bucket this old any more: stop reading it
                await self._run("bucket_delete", _SCOPE, task_list, _RECORDS, bucket)
                self._known_buckets.discard((task_list, _RECORDS, bucket))
            found.sort(key=lambda r: (r.updated_at, r.task.id))
            for record in found:
                yield record

    async def claim(self, task_list: str, id: str, owner: str, ttl: float, *, older_than: float) -> bool:
        now = self.clock()
        bucket = await self._index(task_list, id)
        if bucket is None:
            return False
        row = (await self._run("record_get", task_list, bucket, id)).one()
        if (row is None or row.get("task") is None or (row["claim_until"] or 0) > now
                or (row["updated_at"] or 0) > now - older_than):
            return False
        seen, until = row["attempts"] or 0, now + ttl
        result = await self._run("record_claim", self.options.ttl, owner, until, seen + 1, now,
                                 task_list, bucket, id, now, seen, now - older_than)
        if result.was_applied:
            return True
        return await self._claimed_by(owner, until, seen + 1, result.one(), (task_list, bucket, id))

    async def _claimed_by(self, owner: str, until: float, attempts: int,
                          refused: dict[str, Any] | None, key: tuple[str, int, str]) -> bool:
        """True when a refused claim found our own claim: one applied before a second run of
        the same statement. A refused conditional update returns the columns of its
        conditions; only when they hold what we wrote is the owner read (serially) to tell
        our claim from another owner's at the same instant."""
        if refused is None or refused.get("claim_until") != until or refused.get("attempts") != attempts:
            return False
        current = (await self._run("record_claimed", *key)).one()
        mine = (current is not None and current.get("owner") == owner
                and current.get("claim_until") == until and current.get("attempts") == attempts)
        if mine:
            logger.info("task %s of %s: the claim is our own, written by an earlier run of this "
                        "update", key[2], key[0])
        return mine

    async def schedule(
        self, task: Task, task_list: str | None, at: datetime, *, topic: str, kind: ScheduleKind
    ) -> None:
        if self._no_id(task):
            return
        name, when, now = list_of(task, task_list), epoch(at), self.clock()
        ttl = int(max(0.0, when - now)) + self.options.ttl
        previous = (await self._run("schedule_index_get", name, task.id)).one()
        if previous is not None and previous["at"] != when:
            await self._run("schedule_drop", name, self._bucket(previous["at"]), previous["at"], task.id)
        bucket = self._bucket(when)
        await self._note_bucket(name, _SCHEDULE, bucket, ttl)
        await self._run("schedule_put", name, bucket, when, task.id, task.to_json().decode(), topic,
                        ScheduleKind(kind).value, ttl)
        await self._run("schedule_index_put", name, task.id, when, ttl)

    @staticmethod
    def _scheduled(task_list: str, at: float, row: dict[str, Any]) -> ScheduledTask | None:
        """The entry a schedule row holds. Rows written before the schedule kept destinations
        have no topic and kind: they were retries sent to the task's type. A kind this code
        does not know (a newer taskbus wrote it) is left for the code that knows it."""
        try:
            kind = ScheduleKind(row.get("kind") or ScheduleKind.RETRY)
        except ValueError:
            logger.warning("scheduled task %s of %s has kind %r, unknown to this taskbus: left "
                           "in the schedule", row.get("id"), task_list, row.get("kind"))
            return None
        task = Task.from_json(row["task"])
        return ScheduledTask(task, task_list, at, row.get("topic") or task.type, kind)

    async def due(
        self, task_list: str, now: datetime, *, kind: ScheduleKind | None = None
    ) -> list[ScheduledTask]:
        limit, written = epoch(now), self.clock()
        last = self._bucket(limit)
        ready: list[tuple[float, str, str, ScheduledTask, int]] = []
        buckets = [r["bucket"] async for r in self._rows("buckets_until", _SCOPE, task_list, _SCHEDULE, last)]
        for bucket in buckets:
            rows = [r async for r in self._rows("schedule_due", task_list, bucket, limit)]
            if not rows and bucket < last - 1:  # empty of every kind, and no row can land there
                await self._run("bucket_delete", _SCOPE, task_list, _SCHEDULE, bucket)
            for row in rows:
                entry = self._scheduled(task_list, row["at"], row)
                if entry is not None and (kind is None or entry.kind == kind):
                    ready.append((row["at"], row["id"], row["task"], entry, bucket))
        taken = []
        for at, id, body, entry, bucket in sorted(ready, key=lambda r: (r[0], r[1])):
            # Record first, then take: a crash in between resends at worst, never loses.
            await self._put_created(task_list, id, body, written)
            if (await self._run("schedule_take", task_list, bucket, at, id)).was_applied:
                await self._run("schedule_index_take", task_list, id, at)
                taken.append(entry)
        return taken

    async def scheduled(self, task_list: str, limit: int) -> list[ScheduledTask]:
        """Up to ``limit`` tasks of ``task_list`` waiting in the schedule, soonest first: the
        buckets in order, each read by its clustering order (``at``, ``id``), until enough.

        Raises:
            LedgerError: the database cannot be reached.
        """
        found: list[ScheduledTask] = []
        async for b in self._rows("buckets_until", _SCOPE, task_list, _SCHEDULE, _FAR):
            async for row in self._rows("schedule_due", task_list, b["bucket"], float(_FAR)):
                entry = self._scheduled(task_list, row["at"], row)
                if entry is not None:
                    found.append(entry)
                if len(found) >= limit:
                    return found
        return found

    async def find_scheduled(self, task_list: str, id: str) -> ScheduledTask | None:
        """The scheduled task ``id`` of ``task_list``, through ``schedule_index``, or None.

        Raises:
            LedgerError: the database cannot be reached.
        """
        index = (await self._run("schedule_index_get", task_list, id)).one()
        if index is None:
            return None
        at = index["at"]
        row = (await self._run("schedule_get", task_list, self._bucket(at), at, id)).one()
        if row is None or row.get("task") is None:  # taken by ``due`` a moment ago, or expired
            return None
        return self._scheduled(task_list, at, {**row, "id": id})

    async def unschedule(
        self, task_list: str, id: str, *, kind: ScheduleKind | None = None
    ) -> ScheduledTask | None:
        """Remove the scheduled task ``id`` (of ``kind``, when given); what was removed, or None.

        The row is taken with the same ``DELETE ... IF EXISTS`` as ``due`` uses, so of a
        release and a cancel racing for one task exactly one is applied.

        Raises:
            LedgerError: the database cannot be reached.
        """
        entry = await self.find_scheduled(task_list, id)
        if entry is None or (kind is not None and entry.kind != kind):
            return None
        if not (await self._run("schedule_take", task_list, self._bucket(entry.at), entry.at, id)).was_applied:
            return None
        await self._run("schedule_index_take", task_list, id, entry.at)
        return entry

    async def _put_created(self, task_list: str, id: str, body: str, now: float) -> None:
        bucket, new = await self._locate(task_list, id, now, look_first=True)
        attempts = 0
        if not new:
            row = (await self._run("record_get", task_list, bucket, id)).one()
            attempts = (row or {}).get("attempts") or 0
        await self._run("record_put", task_list, bucket, id, "created", body, attempts, now, now,
                        self.options.ttl)

    async def task_lists(self) -> list[str]:
        return sorted({r["task_list"] async for r in self._rows("lists", _SCOPE)})

    async def stats(self, task_list: str) -> TaskListStats:
        now = self.clock()
        counts = {State.CREATED: 0, State.STARTED: 0}
        oldest = now
        async for b in self._rows("buckets_until", _SCOPE, task_list, _RECORDS, _FAR):
            async for row in self._rows("records_in_bucket", task_list, b["bucket"]):
                record = self._record(task_list, row["id"], row)
                if record is not None:
                    counts[record.state] += 1
                    oldest = min(oldest, record.created_at)
        scheduled = 0
        async for b in self._rows("buckets_until", _SCOPE, task_list, _SCHEDULE, _FAR):
            scheduled += (await self._run("schedule_count", task_list, b["bucket"])).one()["count"]
        return TaskListStats(task_list, counts[State.CREATED], counts[State.STARTED], scheduled,
                             max(0.0, now - oldest))

    async def init_schema(self, replication: str = "") -> str:
        """Create the keyspace (``replication``: ``3`` or ``dc1:3,dc2:3``) and tables, or
        upgrade an older keyspace in place; safe to run twice, and concurrently. The driver
        waits for schema agreement after each change.

        Raises:
            ConfigError: a bad replication spec or keyspace name.
            LedgerError: Cassandra refused the schema, or the keyspace is newer than this code.
        """
        cql.replication_map(replication)  # a bad spec is the user's to fix: say so before connecting
        shared = await self._session()
        return await cassandra_upgrade.upgrade(shared.session, self.options, replication)


def open_ledger(url: str) -> CassandraLedger:
    """The ledger at ``url``; see ``cassandra_session`` for the options.

    Raises:
        ConfigError: a malformed URL or option.
    """
    options = CassandraOptions.from_url(url)
    cql.render("", options.keyspace)  # validates the keyspace name now, not at first use
    return CassandraLedger(options)
