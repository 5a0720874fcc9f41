"""Ledger writes off the Launcher's hot path.

A task must never wait for, or fail because of, the ledger: the ledger is the safety net,
not the critical path. The recorder queues ``started``/``touch``/``done`` and one background
coroutine applies them in order. A ``started`` whose ``done`` is already queued is skipped
(the task finished before the write happened: only ``done`` matters). Failures are logged
once per outage, counted, and retried with backoff until the ledger is back.
``failing_since`` and ``last_error`` say how long the current outage has lasted, for /healthz.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from task.backoff import Backoff
from task.bus.broadcast import ledger_id
from task.ledger.base import Ledger
from task.task import Task

__all__ = ["LedgerRecorder"]

logger = logging.getLogger(__name__)

#: Backoff between retries while the ledger is failing, in seconds.
_RETRY = Backoff(first=0.1, cap=5.0)


@dataclass(slots=True)
class _Op:
    kind: str  # "started", "touch" or "done"
    task_list: str
    id: str
    task: Task | None = None


class LedgerRecorder:
    """Queues ledger writes and applies them in the background."""

    def __init__(
        self, ledger: Ledger, *, max_pending: int = 100_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.max_pending = max_pending
        self._ops: deque[_Op] = deque()
        self._done_pending: dict[tuple[str, str], int] = {}
        #: task id -> its ledger id, for broadcast tasks running here (``ledger_id``)
        self._instance_ids: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self.failures = 0
        self.dropped = 0
        self.applied = 0
        self.skipped_ids = 0
        #: when the current run of failed writes began (``clock()``); None while writes succeed
        self.failing_since: float | None = None
        #: the last write failure's text, kept after the ledger is back
        self.last_error = ""
        #: when a write last succeeded; None before the first
        self.last_success: float | None = None

    def _push(self, op: _Op) -> None:
        if len(self._ops) >= self.max_pending:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                logger.error("ledger is behind by %d writes; dropping (%d so far)", len(self._ops), self.dropped)
            return
        if op.kind == "done":
            key = (op.task_list, op.id)
            self._done_pending[key] = self._done_pending.get(key, 0) + 1
        self._ops.append(op)
        self._wake.set()
        if self._runner is None and not self._closing:
            self._runner = asyncio.get_running_loop().create_task(self._drain(), name="ledger-recorder")

    def started(self, task: Task, task_list: str) -> None:
        """Queue ``ledger.started``; skipped when the task's ``done`` is queued first."""
        if not task.id:
            self.skipped_ids += 1
            return
        key = ledger_id(task)
        if key != task.id:  # a broadcast task: one entry per instance, <id>@<instance>
            self._instance_ids[task.id] = key
            task = task.copy(id=key)
        self._push(_Op("started", task_list, key, task))

    def touch(self, task_list: str, id: str) -> None:
        """Queue a heartbeat of a running task."""
        if id:
            self._push(_Op("touch", task_list, self._instance_ids.get(id, id)))

    def done(self, task_list: str, id: str) -> None:
        """Queue ``ledger.done``."""
        if id:
            self._push(_Op("done", task_list, self._instance_ids.pop(id, id)))

    @property
    def pending(self) -> int:
        return len(self._ops)

    async def _apply(self, op: _Op) -> None:
        if op.kind == "started":
            if self._done_pending.get((op.task_list, op.id)):
                return
            assert op.task is not None
            await self.ledger.started(op.task, op.task_list)
        elif op.kind == "touch":
            if not self._done_pending.get((op.task_list, op.id)):
                await self.ledger.touch(op.task_list, op.id)
        else:
            await self.ledger.done(op.task_list, op.id)

    def _finished(self, op: _Op) -> None:
        if op.kind == "done":
            key = (op.task_list, op.id)
            left = self._done_pending[key] - 1
            if left:
                self._done_pending[key] = left
            else:
                del self._done_pending[key]
        self.applied += 1

    async def _drain(self) -> None:
        failing_since = 0
        while True:
            while self._ops:
                op = self._ops[0]
                try:
                    await self._apply(op)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - any backend failure: retry, never lose the write
                    self.failures += 1
                    self.last_error = str(err) or type(err).__name__
                    if self.failing_since is None:
                        self.failing_since = self.clock()
                    if failing_since == 0:
                        logger.warning("ledger write failed, retrying in the background: %s", err)
                    await asyncio.sleep(_RETRY.delay(failing_since))
                    failing_since += 1
                    continue
                if failing_since:
                    logger.warning("ledger is back after %d failed writes", failing_since)
                    failing_since = 0
                self.failing_since = None
                self.last_success = self.clock()
                self._ops.popleft()
                self._finished(op)
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()

    async def close(self, timeout: float = 5.0) -> None:
        """Apply what is queued (up to ``timeout`` seconds), then stop. Idempotent."""
        self._closing = True
        self._wake.set()
        if self._runner is not None:
            try:
                await asyncio.wait_for(self._runner, timeout)
            except TimeoutError:
                logger.error("ledger: %d writes not applied at shutdown", len(self._ops))
            self._runner = None
