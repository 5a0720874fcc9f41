"""One day of tasks folded in memory and kept up to date from the events added since.

The Cassandra store keeps its events in day partitions clustered by ``at``, so after one
full read of a day it only needs the rows written since: ``since()`` says from when to read
again. Rows are read again from a ``margin`` before the newest one already folded, because
another flow replica's clock, or a write still in flight, can put an event a little behind
it; a row already folded is known by its ``seq`` and skipped. A row later than the margin
allows is missed until the next full read (``full_refresh`` in the store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from task.flow.store import TaskEvent, TaskRow
from task.flow.store_fold import TaskFold

__all__ = ["DayView"]

_Key = tuple[str, str, str]


class DayView:
    """The tasks of ``day`` folded from the event rows given to ``add``."""

    def __init__(self, day: date, *, margin: float = 300.0) -> None:
        self.day = day
        self.margin = margin
        self._folds: dict[_Key, TaskFold] = {}
        self._count = 0
        #: the latest ``at`` folded
        self._newest = float("-inf")
        #: seq -> at of the rows folded within ``margin`` of ``_newest``
        self._recent: dict[str, float] = {}
        self._rows: list[TaskRow] | None = []

    def since(self) -> float:
        """Read rows from this ``at`` on to catch up (everything when nothing was folded)."""
        return self._newest - self.margin

    def add(self, rows: Iterable[dict[str, Any]], event: Callable[[dict[str, Any]], TaskEvent]) -> int:
        """Fold the rows not folded yet (each has ``at`` and ``seq``; ``event`` reads one);
        returns how many were new."""
        fresh = sorted((r for r in rows if r["seq"] not in self._recent),
                       key=lambda r: (r["at"], r["seq"]))
        for row in fresh:
            e = event(row)
            key = (e.id, e.type, e.job)
            fold = self._folds.get(key)
            if fold is None:
                self._folds[key] = TaskFold(e, self._count, self.day)
            else:
                fold.add(e)
            self._count += 1
            self._recent[row["seq"]] = row["at"]
            self._newest = max(self._newest, row["at"])
        if fresh:
            self._rows = None
            edge = self.since()
            self._recent = {seq: at for seq, at in self._recent.items() if at >= edge}
        return len(fresh)

    def rows(self) -> list[TaskRow]:
        """The day's tasks, newest first (by first event, then most recently recorded)."""
        if self._rows is None:
            folds = sorted(self._folds.values(), key=lambda f: (-f.first, -f.seq))
            self._rows = [f.row() for f in folds]
        return self._rows
