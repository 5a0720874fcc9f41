"""What users write: a ``Worker`` subclass, whose class is the MakeWorker (info -> Worker).

The Launcher builds one worker per task from the task's ``info`` and awaits ``do_task``;
a plain ``def do_task`` runs in a thread so blocking code never stalls the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

from task.result import Outcome, Result
from task.task import Task

__all__ = ["MakeWorker", "StopSignal", "TaskContext", "Worker", "invalid_worker"]


class StopSignal:
    """A flag that the event loop sets and worker threads may read: "stop soon".

    ``raised`` is a plain attribute: the Launcher reads it for every message, and a worker
    thread reads a bool safely (one reference, under the GIL) without a lock or an Event.
    """

    __slots__ = ("_event", "raised")

    def __init__(self) -> None:
        self.raised = False
        self._event: asyncio.Event | None = None

    def is_set(self) -> bool:
        return self.raised

    def set(self) -> None:
        """Set from the event loop's thread."""
        self.raised = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self.raised:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class TaskContext:
    """What a worker gets with its task: the task and whether to stop early.

    ``stopping`` turns true when the launcher shuts down or the task's timeout passes; it is
    safe to read from a worker thread.
    """

    __slots__ = ("_launcher_stop", "_task_stop", "task")

    def __init__(self, task: Task, launcher_stop: StopSignal) -> None:
        self.task = task
        self._launcher_stop = launcher_stop
        self._task_stop: StopSignal | None = None

    @property
    def stopping(self) -> bool:
        """True once the worker should return (``interrupted()`` is the usual answer)."""
        return self._launcher_stop.raised or (self._task_stop is not None and self._task_stop.raised)

    async def wait_stopping(self) -> None:
        """Return when ``stopping`` becomes true."""
        if self._task_stop is None:
            self._task_stop = StopSignal()
        waits = [asyncio.ensure_future(self._launcher_stop.wait()), asyncio.ensure_future(self._task_stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def stop_task(self) -> None:
        """The launcher ends this one task early (timeout)."""
        if self._task_stop is None:
            self._task_stop = StopSignal()
        self._task_stop.set()


class Worker:
    """Base class for workers. Subclass it and implement ``do_task``.

    ``task_type`` names the tasks the worker does (``--type`` overrides). Keys set in
    ``self.meta`` are merged into the done task's meta the way the Go launcher does.

    A subclass may define ``__init__`` without calling ``super().__init__`` (Go users write
    ``NewWorker(info)`` and set only their own fields): every attribute the Launcher reads has
    a class-level default, so the base class works either way.
    """

    task_type: ClassVar[str] = ""
    #: the task's info; set by ``__init__`` (a subclass that skips ``super()`` sets its own)
    info: str = ""
    #: the worker's meta until first use; a class default so no ``__init__`` is needed for it
    _meta: dict[str, list[str]] | None = None

    def __init__(self, info: str) -> None:
        self.info = info

    @property
    def meta(self) -> dict[str, list[str]]:
        """Meta for the done task: ``self.meta["rows"] = ["42"]``. Created on first use."""
        if self._meta is None:
            self._meta = {}
        return self._meta

    @meta.setter
    def meta(self, value: dict[str, list[str]]) -> None:
        self._meta = value

    def worker_meta(self) -> dict[str, list[str]] | None:
        """The meta this worker set, or None when it set none (the task's meta stays as is)."""
        return self._meta or None

    async def do_task(self, ctx: TaskContext) -> Outcome:
        """Do the task; return ``completed(...)``, ``failed(...)`` and so on.

        May also be a plain ``def``: the Launcher then runs it in a thread.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement do_task")

    @classmethod
    async def setup(cls) -> None:
        """Once per launcher, before the first task: open pools and clients here."""

    @classmethod
    async def teardown(cls) -> None:
        """Once per launcher, after the last task: close what ``setup`` opened."""


#: Anything that turns a task's info into a worker; usually a ``Worker`` subclass.
MakeWorker = Callable[[str], Worker]


class _InvalidWorker(Worker):
    def __init__(self, msg: str) -> None:
        self._msg = msg

    async def do_task(self, ctx: TaskContext) -> Outcome:
        return Result.ERROR, self._msg


def invalid_worker(msg: str, *args: object) -> Worker:
    """A worker that fails its task with ``msg``: return it from a MakeWorker when the info is
    unusable (Go's ``task.InvalidWorker``)."""
    return _InvalidWorker(msg % args if args else msg)
