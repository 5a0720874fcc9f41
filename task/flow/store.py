"""The flow task store: every task event ``taskbus flow`` sees, kept for its API and console.

The flow engine ``record``s events (a task created by a phase, a retry sent, a done task
read, a child started); the JSON API and the console read them back per UTC day, paged and
filtered (``tasks``, ``count_tasks``), per type:job (``recap``), per id (``chain``). Alerts
and file arrivals are kept beside them for the console's pages.

A **task** in the store is one (id, type, job): children and retries keep their parent's id,
as Go's flow does, so one id carries the events of several tasks, and ``chain(id)`` returns
all of them. A task belongs to the UTC day of its first recorded event, and keeps it: a retry
after midnight is still on the day the task was created. That day is what ``tasks(day)``,
``recap(day)`` and ``clean`` go by.

Backends by URL (``open_store``): ``sqlite:PATH`` (by default the ledger's file, in tables
prefixed ``flow_`` with their own schema version), ``memory:``, ``cassandra://...``.
Failures of the database raise ``LedgerError`` (the store lives beside the ledger); bad URLs
raise ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypedDict, cast

from task.ledger.registry import backend_module

if TYPE_CHECKING:
    from task.task import Task

__all__ = [
    "STORES",
    "AlertKind",
    "AlertRecord",
    "Event",
    "FileRecord",
    "RecapRow",
    "StoreAbout",
    "TaskEvent",
    "TaskRow",
    "TaskStore",
    "day_of",
    "day_span",
    "open_store",
]

#: the results a done task may carry; "" on the other events
RESULTS = ("complete", "error", "alert", "warn")


class Event(StrEnum):
    """What happened to a task."""

    #: a phase created it (cron tick, file, backload, by hand)
    CREATED = "created"
    #: flow sent it again after an error
    RETRIED = "retried"
    #: its done task came back (``result`` says how it went)
    DONE = "done"
    #: flow started it as a child phase when its parent completed (``parent`` names it)
    CHILD = "child"


class AlertKind(StrEnum):
    """Why an alert was raised."""

    ERROR = "error"  # out of retries
    ALERT = "alert"  # the worker said ``alert``
    INCOMPLETE = "incomplete"  # created and never finished within ``task_ttl``
    WARN = "warn"  # recorded only


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One event of one task, as the store keeps it.

    ``created``/``started``/``ended`` are the task's own RFC 3339 strings, as on the wire;
    ``at`` is when flow saw the event (Unix seconds), which orders the chain.
    """

    id: str
    type: str
    job: str
    event: Event
    at: float
    result: str = ""
    msg: str = ""
    info: str = ""
    meta: str = ""
    workflow: str = ""
    created: str = ""
    started: str = ""
    ended: str = ""
    #: for ``child``: "type:job" of the parent phase
    parent: str = ""
    #: the retry number (0 for the first try)
    attempt: int = 0

    @classmethod
    def of(cls, task: Task, event: Event, at: float, *, parent: str = "", attempt: int = 0) -> TaskEvent:
        """The event ``event`` of ``task`` seen at ``at``; ``workflow`` comes from its meta."""
        return cls(
            id=task.id, type=task.type, job=task.job, event=Event(event), at=at,
            result=task.result if Event(event) is Event.DONE else "", msg=task.msg, info=task.info,
            meta=task.meta, workflow=task.get_meta("workflow"), created=task.created,
            started=task.started, ended=task.ended, parent=parent, attempt=attempt,
        )


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task (id, type, job) as a console row.

    ``result`` is the result of its latest done event ("" before the first); ``running`` is
    True while its latest event is not a done one (sent, or sent again after an error).
    ``attempts`` counts the times it was sent (created, child, retried events; at least 1).
    ``run_time`` is seconds from ``started`` to ``ended`` of the latest done event, or None.
    ``first``/``last`` are the ``at`` of its first and latest events.
    """

    id: str
    type: str
    job: str
    day: date
    result: str
    running: bool
    created: str
    started: str
    ended: str
    run_time: float | None
    attempts: int
    msg: str
    workflow: str
    info: str
    first: float
    last: float

    @property
    def name(self) -> str:
        """``type:job`` (``type`` alone without a job), as phases name tasks."""
        return f"{self.type}:{self.job}" if self.job else self.type


@dataclass(frozen=True, slots=True)
class RecapRow:
    """One type:job of one day: its tasks counted by latest result, and their run times
    (seconds, over the finished ones; None when none finished)."""

    type: str
    job: str
    tasks: int
    complete: int
    error: int
    alert: int
    warn: int
    running: int
    min_run: float | None
    avg_run: float | None
    max_run: float | None
    #: ``at`` of the group's earliest first event and latest event
    first: float
    last: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert flow raised, for the console's alerts page and the summary webhook."""

    at: float
    id: str
    type: str
    job: str
    kind: AlertKind
    msg: str


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file that reached flow: which phases it matched ("type:job") and the task ids it started."""

    at: float
    path: str
    size: int
    phases: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()


class StoreAbout(TypedDict):
    """What the about page shows of the store."""

    backend: str
    #: task events kept
    rows: int
    #: bytes on disk (the whole SQLite file with the ledger's tables; 0 where unknown)
    bytes: int
    #: the oldest day with a task, ISO format, or None when empty
    oldest_day: str | None


class TaskStore(Protocol):
    """Where flow keeps task events, alerts and files. All methods are async; no I/O happens
    before the first call. ``day`` arguments are UTC dates.

    Reads are index-backed in every backend: ``tasks`` and ``count_tasks`` filter within one
    day on type, job, result and running; ``chain`` reads one id.
    """

    async def record(self, events: Sequence[TaskEvent]) -> None:
        """Keep ``events`` (one transaction where the backend has them). Events without an id
        are skipped: they cannot be followed."""

    async def chain(self, id: str) -> list[TaskEvent]:
        """Every event of ``id`` (all its types and jobs), in time order, then record order."""

    async def tasks(
        self, day: date, *, type: str | None = None, job: str | None = None,
        result: str | None = None, running: bool | None = None, limit: int = 100, offset: int = 0,
    ) -> list[TaskRow]:
        """The tasks of ``day`` that match every given filter, newest first (by first event).

        ``result`` matches the latest done result ("" matches tasks never done)."""

    async def count_tasks(
        self, day: date, *, type: str | None = None, job: str | None = None,
        result: str | None = None, running: bool | None = None,
    ) -> int:
        """How many tasks ``tasks`` would page through with these filters."""

    async def recap(self, day: date) -> list[RecapRow]:
        """One row per type:job with tasks on ``day``, sorted by type then job."""

    async def days(self) -> list[date]:
        """The days that have tasks, newest first (the console's day picker)."""

    async def unfinished(
        self, created_before: float, *, created_after: float | None = None, limit: int = 1000
    ) -> list[TaskRow]:
        """Tasks first seen before ``created_before`` (and at or after ``created_after``)
        and still running (not done since their last send), oldest first: what "incomplete"
        alerts are raised for. Give ``created_after`` (where the previous look stopped, or
        ``task_ttl`` further back) so a day-partitioned store reads only the days between."""

    async def record_alert(self, alert: AlertRecord) -> None:
        """Keep ``alert`` under the UTC day of its ``at``."""

    async def alerts(self, day: date) -> list[AlertRecord]:
        """The alerts of ``day`` in time order."""

    async def record_file(self, file: FileRecord) -> None:
        """Keep ``file`` under the UTC day of its ``at``."""

    async def files(self, day: date) -> list[FileRecord]:
        """The files of ``day`` in time order."""

    async def clean(self, older_than: float) -> int:
        """Forget every day that ended at or before ``older_than`` (Unix seconds): its tasks
        with all their events, its alerts and files. Returns the number of events removed."""

    async def about(self) -> StoreAbout:
        """Size and age of what is kept."""

    async def close(self) -> None:
        """Release the database. Idempotent."""


def day_of(at: float) -> date:
    """The UTC day of Unix time ``at``."""
    return datetime.fromtimestamp(at, UTC).date()


def day_span(day: date) -> tuple[float, float]:
    """Unix seconds of the start of UTC ``day`` and of the next day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


#: scheme -> (module, extra, client import); each module has ``open_store(url)``
STORES: dict[str, tuple[str, str | None, str | None]] = {
    "memory": ("task.flow.store_memory", None, None),
    "sqlite": ("task.flow.store_sqlite", None, None),
    "cassandra": ("task.flow.store_cassandra", "cassandra", "cassandra"),
}


class _StoreModule(Protocol):
    def open_store(self, url: str) -> TaskStore: ...


def open_store(url: str) -> TaskStore:
    """The task store at ``url``: ``sqlite:PATH`` (usually the ledger's URL), ``memory:``,
    ``cassandra://h1,h2:9042/keyspace?...``. No I/O happens here.

    Raises:
        ConfigError: no or unknown scheme, a malformed URL, or a missing extra.
    """
    _, module = backend_module(url, STORES, "task store", "stores")
    return cast(_StoreModule, module).open_store(url)
