"""The ledger protocol: a record of every outstanding task, so none is lost.

A task is outstanding from ``created`` (a taskmaster made it) or ``started`` (a worker took
it) until ``done``. A task neither done nor touched within ``older_than`` is presumed lost
and is found by ``outstanding``; ``claim`` makes sure only one recover replica resends it.
``schedule``/``due`` hold tasks that must be sent later (retry backoff, delayed tasks,
workflow steps), each with the topic it goes to and its ``ScheduleKind``, so each app
releases only its own kind and sends each task where it belongs.

Every operation is idempotent: recording a task twice makes one record, ``done`` twice is
harmless. A task without an id cannot be recorded; backends count and skip it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from task.task import Task

__all__ = [
    "Ledger",
    "LedgerRecord",
    "ScheduleCanceller",
    "ScheduleKind",
    "ScheduleReader",
    "ScheduledTask",
    "State",
    "TaskListStats",
]


class State(StrEnum):
    """Where an outstanding task is."""

    CREATED = "created"  #: made by a taskmaster, not yet taken by a worker
    STARTED = "started"  #: a worker is running it (or was, when it died)


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One outstanding task as the ledger holds it."""

    task: Task
    task_list: str
    state: State
    #: how many times the task was sent again by ``recover``
    attempts: int
    #: when the record was created and last written (created/started/touch), Unix seconds
    created_at: float
    updated_at: float
    #: the recover replica that last claimed it, if any
    owner: str = ""


class ScheduleKind(StrEnum):
    """Why a task waits in the schedule: each app releases only its own kind with ``due``."""

    RETRY = "retry"  #: a failed task waiting out its backoff (``taskbus retry``)
    DELAY = "delay"  #: a task sent with a delay or at a given time
    FLOW = "flow"  #: a workflow step waiting for its time


@dataclass(frozen=True, slots=True)
class ScheduledTask:
    """A task ``schedule`` holds until it is due, and where it goes then."""

    task: Task
    task_list: str
    #: when it is due, Unix seconds
    at: float
    #: the topic the task is sent to when it is due
    topic: str
    kind: ScheduleKind


@dataclass(frozen=True, slots=True)
class TaskListStats:
    """What ``taskbus ledger stats`` prints for one task list."""

    task_list: str
    created: int
    started: int
    scheduled: int
    #: age in seconds of the oldest outstanding record (0 when none)
    oldest_age: float


@runtime_checkable
class Ledger(Protocol):
    """The outstanding-task ledger. Backends: ``memory:``, ``sqlite:PATH``, ``cassandra://``.

    ``task_list`` defaults to the task's type where a task is given.
    """

    async def created(self, task: Task, task_list: str | None = None) -> bool:
        """Record a new task; True if it was not recorded before.

        Raises:
            LedgerError: the database cannot be reached.
        """

    async def started(self, task: Task, task_list: str | None = None) -> None:
        """Record that a worker took the task (creates the record when missing)."""

    async def touch(self, task_list: str, id: str) -> None:
        """Heartbeat of a running task: it is not lost while it is touched."""

    async def done(self, task_list: str, id: str) -> None:
        """The task is finished: forget it. Harmless when unknown or already done."""

    async def find(self, task_list: str, id: str) -> LedgerRecord | None:
        """The record of one task, or None."""

    def outstanding(self, task_list: str, older_than: float) -> AsyncIterator[LedgerRecord]:
        """Records of ``task_list`` neither done nor written within ``older_than`` seconds,
        oldest first."""

    async def claim(self, task_list: str, id: str, owner: str, ttl: float, *, older_than: float) -> bool:
        """Atomically take the record for ``ttl`` seconds; True when this owner got it.

        The record must still be idle for ``older_than`` seconds (the threshold that made
        ``outstanding`` list it), checked in the same atomic step: a task touched or started
        since it was listed is alive again, and resending it would run it twice.
        A successful claim counts an attempt and refreshes ``updated_at``, so the record is
        not outstanding again until ``older_than`` passes once more. An unexpired claim blocks
        every owner, its holder too: each claim is one resend. False for an unknown id.
        """

    async def schedule(
        self, task: Task, task_list: str | None, at: datetime, *, topic: str, kind: ScheduleKind
    ) -> None:
        """Hold ``task`` until ``at``, then release it to be sent to ``topic``.

        Scheduling the same id in the same task list again replaces it (time, topic, kind).
        """

    async def due(
        self, task_list: str, now: datetime, *, kind: ScheduleKind | None = None
    ) -> list[ScheduledTask]:
        """Scheduled tasks of ``kind`` (every kind when None) whose time has come, oldest first.

        Each is moved from the schedule to the outstanding records (state ``created``) in
        one step, so a sender that dies before sending leaves it for ``recover`` to find.
        """

    async def task_lists(self) -> list[str]:
        """Every task list with outstanding or scheduled records."""

    async def stats(self, task_list: str) -> TaskListStats:
        """Counts for one task list."""

    async def close(self) -> None:
        """Release connections. Idempotent."""


@runtime_checkable
class ScheduleReader(Protocol):
    """A ledger that can list scheduled tasks without releasing them, for ``taskbus ledger ls``.

    Separate from ``Ledger`` because ``due`` is the only read the apps need; a backend
    without it still works everywhere, ``ledger ls`` then says it cannot list the schedule.
    """

    async def scheduled(self, task_list: str, limit: int) -> list[ScheduledTask]:
        """Up to ``limit`` tasks of ``task_list`` waiting in the schedule, soonest first.

        Raises:
            LedgerError: the database cannot be reached.
        """

    async def find_scheduled(self, task_list: str, id: str) -> ScheduledTask | None:
        """The scheduled task ``id`` of ``task_list`` (when, where, what kind), or None.

        Raises:
            LedgerError: the database cannot be reached.
        """


@runtime_checkable
class ScheduleCanceller(Protocol):
    """A ledger that can take a task out of the schedule before it is due (``taskbus cancel``).

    Separate from ``Ledger``, as ``ScheduleReader`` is, so a backend without it still works
    everywhere else; cancelling then says the ledger cannot.
    """

    async def unschedule(
        self, task_list: str, id: str, *, kind: ScheduleKind | None = None
    ) -> ScheduledTask | None:
        """Remove the scheduled task ``id`` of ``task_list`` (only if of ``kind``, when given)
        and return what was removed; None when it does not wait there (unknown, another kind,
        or released by ``due`` already).

        Atomic with ``due``: of a cancel and a release racing for one task, exactly one gets it.

        Raises:
            LedgerError: the database cannot be reached.
        """
