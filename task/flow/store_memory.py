"""The task store in this process's memory (``memory:``): for tests and trying flow out.

Everything is lost when the process ends. Reads sort the day's tasks each time, which is
fine at test sizes; use ``sqlite:`` for a real day.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date
from typing import ClassVar, Self

from task.errors import LedgerError
from task.flow.store import (
    AlertRecord,
    FileRecord,
    RecapRow,
    StoreAbout,
    TaskEvent,
    TaskRow,
    day_of,
    day_span,
)
from task.flow.store_fold import TaskFold, matches, recap_rows

__all__ = ["MemoryTaskStore", "open_store"]

_Key = tuple[str, str, str]


class MemoryTaskStore:
    """A ``TaskStore`` in dictionaries."""

    #: the process's stores by name (``memory:NAME``)
    _named: ClassVar[dict[str, MemoryTaskStore]] = {}

    def __init__(self) -> None:
        self._events: dict[str, list[tuple[float, int, TaskEvent]]] = {}
        self._tasks: dict[_Key, TaskFold] = {}
        self._days: dict[date, list[_Key]] = {}
        #: each day's rows, newest first, built on the first read after a change
        self._rows: dict[date, list[TaskRow]] = {}
        self._alerts: list[AlertRecord] = []
        self._files: list[FileRecord] = []
        self._seq = itertools.count()
        self._closed = False

    @classmethod
    def named(cls, name: str) -> MemoryTaskStore:
        """The process-wide store called ``name`` (``memory:NAME`` URLs use it)."""
        store = cls._named.get(name)
        if store is None or store._closed:
            store = cls._named[name] = cls()
        return store

    def _check(self) -> None:
        if self._closed:
            raise LedgerError("the memory task store is closed; open a new one")

    async def record(self, events: Sequence[TaskEvent]) -> None:
        self._check()
        for event in events:
            if not event.id:
                continue
            seq = next(self._seq)
            self._events.setdefault(event.id, []).append((event.at, seq, event))
            key = (event.id, event.type, event.job)
            fold = self._tasks.get(key)
            if fold is None:
                fold = self._tasks[key] = TaskFold(event, seq)
                self._days.setdefault(fold.day, []).append(key)
            else:
                fold.add(event)
            self._rows.pop(fold.day, None)

    async def chain(self, id: str) -> list[TaskEvent]:
        self._check()
        return [event for _, _, event in sorted(self._events.get(id, []), key=lambda e: e[:2])]

    def _day(self, day: date) -> list[TaskRow]:
        rows = self._rows.get(day)
        if rows is None:
            folds = sorted((self._tasks[key] for key in self._days.get(day, [])),
                           key=lambda f: (-f.first, -f.seq))
            rows = self._rows[day] = [f.row() for f in folds]
        return rows

    async def tasks(
        self, day: date, *, type: str | None = None, job: str | None = None,
        result: str | None = None, running: bool | None = None, limit: int = 100, offset: int = 0,
    ) -> list[TaskRow]:
        self._check()
        rows = (r for r in self._day(day) if matches(r, type, job, result, running))
        return list(itertools.islice(rows, offset, offset + limit))

    async def count_tasks(
        self, day: date, *, type: str | None = None, job: str | None = None,
        result: str | None = None, running: bool | None = None,
    ) -> int:
        self._check()
        return sum(1 for r in self._day(day) if matches(r, type, job, result, running))

    async def recap(self, day: date) -> list[RecapRow]:
        self._check()
        return recap_rows(self._day(day))

    async def days(self) -> list[date]:
        self._check()
        return sorted(self._days, reverse=True)

    async def unfinished(
        self, created_before: float, *, created_after: float | None = None, limit: int = 1000
    ) -> list[TaskRow]:
        self._check()
        after = float("-inf") if created_after is None else created_after
        folds = sorted((f for f in self._tasks.values()
                        if f.running and after <= f.first < created_before),
                       key=lambda f: (f.first, f.seq))
        return [f.row() for f in folds[:limit]]

    async def record_alert(self, alert: AlertRecord) -> None:
        self._check()
        self._alerts.append(alert)

    async def alerts(self, day: date) -> list[AlertRecord]:
        self._check()
        start, end = day_span(day)
        return sorted((a for a in self._alerts if start <= a.at < end), key=lambda a: a.at)

    async def record_file(self, file: FileRecord) -> None:
        self._check()
        self._files.append(file)

    async def files(self, day: date) -> list[FileRecord]:
        self._check()
        start, end = day_span(day)
        return sorted((f for f in self._files if start <= f.at < end), key=lambda f: f.at)

    async def clean(self, older_than: float) -> int:
        self._check()
        removed = 0
        for day in [d for d in self._days if day_span(d)[1] <= older_than]:
            self._rows.pop(day, None)
            for key in self._days.pop(day):
                del self._tasks[key]
                events = self._events[key[0]]
                kept = [e for e in events if (e[2].type, e[2].job) != key[1:]]
                removed += len(events) - len(kept)
                if kept:
                    self._events[key[0]] = kept
                else:
                    del self._events[key[0]]
        self._alerts = [a for a in self._alerts if day_span(day_of(a.at))[1] > older_than]
        self._files = [f for f in self._files if day_span(day_of(f.at))[1] > older_than]
        return removed

    async def about(self) -> StoreAbout:
        self._check()
        rows = sum(len(events) for events in self._events.values())
        oldest = min(self._days, default=None)
        return StoreAbout(backend="memory", rows=rows, bytes=0,
                          oldest_day=None if oldest is None else oldest.isoformat())

    async def close(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_store(url: str) -> MemoryTaskStore:
    """``memory:`` (a new empty store) or ``memory:NAME`` (the process's store called NAME),
    as the memory ledger's URLs, so ``--store`` can default to ``--ledger``."""
    name = url.partition(":")[2].strip("/")
    return MemoryTaskStore.named(name) if name else MemoryTaskStore()
