"""The in-process ledger: a public backend for tests and embedding, and the test harness.

``memory:`` is a fresh ledger; ``memory:NAME`` is the process's ledger called NAME, so an app
built from settings and the test that checks it share one. Nothing survives the process.
``clock`` is injectable so tests age records without sleeping, and ``inject`` makes the next
operations fail the way a real database does (``LedgerFault.UNAVAILABLE``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import ClassVar, Self

from task.errors import LedgerError
from task.ledger.base import LedgerRecord, ScheduledTask, ScheduleKind, State, TaskListStats
from task.ledger.common import SkipsTasksWithoutId, epoch, list_of
from task.task import Task

__all__ = ["LedgerFault", "MemoryLedger", "open_ledger"]

logger = logging.getLogger(__name__)


class LedgerFault(Enum):
    """Failures a test can inject into a ``MemoryLedger``."""

    UNAVAILABLE = "unavailable"  #: the next operations raise LedgerError, as when the DB is down


@dataclass(slots=True)
class _Row:
    record: LedgerRecord
    #: Unix seconds until which the last claim holds (0: never claimed)
    claim_until: float = 0.0


class MemoryLedger(SkipsTasksWithoutId):
    """Outstanding and scheduled tasks in dictionaries of this process."""

    _named: ClassVar[dict[str, MemoryLedger]] = {}

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._rows: dict[tuple[str, str], _Row] = {}
        self._scheduled: dict[tuple[str, str], ScheduledTask] = {}
        self._faults: dict[LedgerFault, int] = {}
        self._closed = False

    @classmethod
    def named(cls, name: str) -> MemoryLedger:
        """The process-wide ledger called ``name`` (``memory:NAME`` URLs use it)."""
        ledger = cls._named.get(name)
        if ledger is None or ledger._closed:
            ledger = cls._named[name] = cls()
        return ledger

    def inject(self, fault: LedgerFault, times: int = 1) -> None:
        """Make the next ``times`` operations fail with LedgerError."""
        self._faults[fault] = self._faults.get(fault, 0) + times

    def _check(self) -> float:
        """Raise for a closed ledger or an injected fault; otherwise the current time."""
        if self._closed:
            raise LedgerError("the memory ledger is closed; open a new one")
        left = self._faults.get(LedgerFault.UNAVAILABLE, 0)
        if left:
            self._faults[LedgerFault.UNAVAILABLE] = left - 1
            raise LedgerError("memory ledger unavailable (injected fault)")
        return self.clock()

    async def created(self, task: Task, task_list: str | None = None) -> bool:
        now = self._check()
        if self._no_id(task):
            return False
        key = (list_of(task, task_list), task.id)
        if key in self._rows:
            return False
        self._rows[key] = _Row(LedgerRecord(task, key[0], State.CREATED, 0, now, now))
        return True

    async def started(self, task: Task, task_list: str | None = None) -> None:
        now = self._check()
        if self._no_id(task):
            return
        key = (list_of(task, task_list), task.id)
        row = self._rows.get(key)
        if row is None:
            self._rows[key] = _Row(LedgerRecord(task, key[0], State.STARTED, 0, now, now))
        else:
            row.record = replace(row.record, state=State.STARTED, updated_at=now)

    async def touch(self, task_list: str, id: str) -> None:
        now = self._check()
        row = self._rows.get((task_list, id))
        if row is not None:
            row.record = replace(row.record, updated_at=now)

    async def done(self, task_list: str, id: str) -> None:
        self._check()
        self._rows.pop((task_list, id), None)

    async def find(self, task_list: str, id: str) -> LedgerRecord | None:
        self._check()
        row = self._rows.get((task_list, id))
        return None if row is None else row.record

    async def outstanding(self, task_list: str, older_than: float) -> AsyncIterator[LedgerRecord]:
        cutoff = self._check() - older_than
        # A snapshot: the caller claims (and so rewrites) records while it iterates.
        found = [
            row.record
            for (name, _), row in self._rows.items()
            if name == task_list and row.record.updated_at <= cutoff
        ]
        found.sort(key=lambda r: (r.updated_at, r.task.id))
        for record in found:
            yield record

    async def claim(self, task_list: str, id: str, owner: str, ttl: float, *, older_than: float) -> bool:
        now = self._check()
        row = self._rows.get((task_list, id))
        if row is None or row.claim_until > now or row.record.updated_at > now - older_than:
            return False
        row.claim_until = now + ttl
        row.record = replace(
            row.record, owner=owner, attempts=row.record.attempts + 1, updated_at=now
        )
        return True

    async def schedule(
        self, task: Task, task_list: str | None, at: datetime, *, topic: str, kind: ScheduleKind
    ) -> None:
        self._check()
        if self._no_id(task):
            return
        name = list_of(task, task_list)
        self._scheduled[(name, task.id)] = ScheduledTask(task, name, epoch(at), topic, ScheduleKind(kind))

    def _waiting(self, task_list: str) -> list[ScheduledTask]:
        """The schedule of ``task_list``, soonest first (ties by id, as SQLite orders them)."""
        waiting = [s for (name, _), s in self._scheduled.items() if name == task_list]
        return sorted(waiting, key=lambda s: (s.at, s.task.id))

    async def due(
        self, task_list: str, now: datetime, *, kind: ScheduleKind | None = None
    ) -> list[ScheduledTask]:
        written = self._check()
        limit = epoch(now)
        ready = [s for s in self._waiting(task_list)
                 if s.at <= limit and (kind is None or s.kind == kind)]
        for entry in ready:
            key = (task_list, entry.task.id)
            del self._scheduled[key]
            row = self._rows.get(key)
            attempts = row.record.attempts if row else 0
            self._rows[key] = _Row(
                LedgerRecord(entry.task, task_list, State.CREATED, attempts, written, written)
            )
        return ready

    async def unschedule(
        self, task_list: str, id: str, *, kind: ScheduleKind | None = None
    ) -> ScheduledTask | None:
        """Remove the scheduled task ``id`` (of ``kind``, when given); what was removed, or None."""
        self._check()
        entry = self._scheduled.get((task_list, id))
        if entry is None or (kind is not None and entry.kind != kind):
            return None
        del self._scheduled[(task_list, id)]
        return entry

    async def scheduled(self, task_list: str, limit: int) -> list[ScheduledTask]:
        """Up to ``limit`` tasks of ``task_list`` waiting in the schedule, soonest first."""
        self._check()
        return self._waiting(task_list)[:limit]

    async def find_scheduled(self, task_list: str, id: str) -> ScheduledTask | None:
        """The scheduled task ``id`` of ``task_list``, or None."""
        self._check()
        return self._scheduled.get((task_list, id))

    async def task_lists(self) -> list[str]:
        self._check()
        return sorted({name for name, _ in self._rows} | {name for name, _ in self._scheduled})

    async def stats(self, task_list: str) -> TaskListStats:
        now = self._check()
        records = [row.record for (name, _), row in self._rows.items() if name == task_list]
        oldest = min((r.created_at for r in records), default=now)
        return TaskListStats(
            task_list=task_list,
            created=sum(r.state is State.CREATED for r in records),
            started=sum(r.state is State.STARTED for r in records),
            scheduled=sum(name == task_list for name, _ in self._scheduled),
            oldest_age=max(0.0, now - oldest),
        )

    async def init_schema(self, replication: str = "") -> str:
        """Nothing to create: says so, for ``taskbus ledger init``."""
        self._check()
        return "the memory ledger needs no schema"

    async def close(self) -> None:
        """Forget nothing but refuse further use. Idempotent."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_ledger(url: str) -> MemoryLedger:
    """``memory:`` (a new ledger) or ``memory:NAME`` (the process's ledger called NAME)."""
    name = url.partition(":")[2].strip("/")
    return MemoryLedger.named(name) if name else MemoryLedger()
