"""How task events add up to a task row and rows to a recap: one set of rules, so the memory
and Cassandra stores (which fold events in Python) and SQLite (which folds in SQL, see
``store_sqlite``) show the same thing.

The rules: the latest event (by ``at``, then by record order) decides whether a task is
running (any event but ``done``); the latest done event gives ``result``, ``msg``, ``started``,
``ended`` and the run time; every send (created, child, retried) counts an attempt; the first
event fixes the task's day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from task import rfc3339
from task.flow.store import Event, RecapRow, TaskEvent, TaskRow, day_of

__all__ = ["TaskFold", "matches", "recap_rows", "run_time"]

_SENDS = frozenset({Event.CREATED, Event.CHILD, Event.RETRIED})


def _instant(text: str) -> datetime | None:
    # fromisoformat (C) reads the usual spellings 30 times faster than the strict parser,
    # which a day's fold would spend most of its time in; anything else goes the strict way
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return rfc3339.parse(text)
    return moment if moment.tzinfo is not None else rfc3339.parse(text)


def run_time(started: str, ended: str) -> float | None:
    """Seconds from ``started`` to ``ended`` (RFC 3339), or None when either is missing."""
    if not started or not ended:
        return None
    begin, end = _instant(started), _instant(ended)
    if begin is None or end is None:
        return None
    return (end - begin).total_seconds()


@dataclass(slots=True)
class TaskFold:
    """One task's events folded so far; ``seq`` orders the tasks of a day as recorded."""

    first_event: TaskEvent
    seq: int
    #: the UTC day the task is on: by default its first recorded event's (it stays there)
    day: date = date.min
    first: float = 0.0
    last: float = float("-inf")
    done_at: float = float("-inf")
    running: bool = True
    result: str = ""
    msg: str = ""
    created: str = ""
    started: str = ""
    ended: str = ""
    run_time: float | None = None
    info: str = ""
    workflow: str = ""
    attempts: int = 0

    def __post_init__(self) -> None:
        self.first = self.first_event.at
        if self.day == date.min:
            self.day = day_of(self.first)
        self.add(self.first_event)

    def add(self, event: TaskEvent) -> None:
        """Fold ``event`` in; events of the same ``at`` count in the order they come."""
        self.first = min(self.first, event.at)
        if event.event in _SENDS:
            self.attempts += 1
        if event.at >= self.last:
            self.last = event.at
            self.running = event.event is not Event.DONE
        if event.event is Event.DONE and event.at >= self.done_at:
            self.done_at = event.at
            self.result, self.msg = event.result, event.msg
            self.started, self.ended = event.started, event.ended
            self.run_time = run_time(event.started, event.ended)
        elif event.event is not Event.DONE and not self.msg:
            self.msg = event.msg
        self.created = self.created or event.created
        self.info = self.info or event.info
        self.workflow = self.workflow or event.workflow

    def row(self) -> TaskRow:
        """The console row of this task."""
        e = self.first_event
        return TaskRow(
            id=e.id, type=e.type, job=e.job, day=self.day, result=self.result,
            running=self.running, created=self.created, started=self.started, ended=self.ended,
            run_time=self.run_time, attempts=max(1, self.attempts),
            msg=self.msg, workflow=self.workflow, info=self.info, first=self.first, last=self.last,
        )


def matches(
    row: TaskRow, type: str | None, job: str | None, result: str | None, running: bool | None
) -> bool:
    """Whether ``row`` passes the console's filters (None: any)."""
    return ((type is None or row.type == type) and (job is None or row.job == job)
            and (result is None or row.result == result)
            and (running is None or row.running == running))


def recap_rows(rows: Iterable[TaskRow]) -> list[RecapRow]:
    """One recap row per type:job of ``rows``, sorted by type then job."""
    groups: dict[tuple[str, str], list[TaskRow]] = {}
    for row in rows:
        groups.setdefault((row.type, row.job), []).append(row)
    recap = []
    for (type, job), group in sorted(groups.items()):
        counts = {name: sum(1 for r in group if r.result == name and not r.running)
                  for name in ("complete", "error", "alert", "warn")}
        times = [r.run_time for r in group if r.run_time is not None]
        recap.append(RecapRow(
            type=type, job=job, tasks=len(group), running=sum(1 for r in group if r.running),
            min_run=min(times, default=None), max_run=max(times, default=None),
            avg_run=sum(times) / len(times) if times else None,
            first=min(r.first for r in group), last=max(r.last for r in group), **counts,
        ))
    return recap
