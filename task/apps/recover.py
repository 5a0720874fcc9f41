"""``taskbus recover``: resend the tasks the ledger says were lost.

A task recorded as started that is neither done nor touched for ``older_than`` has lost
its worker: every ``interval`` this taskmaster claims it (so several replicas never both
resend it) and sends it again to its topic, at most ``max_attempts`` times.

A task recorded as created (sent, not yet taken by a worker) is usually just queued: behind a
backlog it may wait far longer than any task runs, and resending it would only queue a copy
(and later report the original as given up while it still runs). It is lost only if the bus
no longer holds it, which core NATS and NSQ cannot tell us, so created records have their
own, much longer threshold ``created_older_than`` (default 6h): set it above the longest
time a task may wait in a queue, and above ``older_than``. Past that it sends a done task with result ``error`` ("gave up
after N attempts") to the done topic and closes the record, so a human or the retry app
sees it. Each pass also releases scheduled tasks that are due. This is the at-least-once
guarantee that does not depend on the bus: a resent task may run twice, never zero times.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import Field

from task.apps.fire_keys import is_key_list, replica_name
from task.apps.lifecycle import Lifecycle, LifecycleApp, wait_or_stop
from task.bus.base import Producer
from task.bus.registry import open_producer
from task.duration import Duration, format_duration
from task.errors import BusError, ConfigError, LedgerError
from task.ledger.base import Ledger, LedgerRecord, State
from task.ledger.common import resendable
from task.ledger.registry import open_ledger
from task.progress import Progress
from task.result import Result
from task.settings import AppSettings, BusSettings
from task.task import Task
from task.url import redact_url

__all__ = ["RecoverApp", "RecoverSettings"]

logger = logging.getLogger(__name__)


class RecoverSettings(BusSettings):
    """``taskbus recover``: resend tasks the ledger says were lost."""

    task_lists: list[str] = Field(default_factory=list, description="task lists to watch (default: every list in the ledger)")
    interval: Duration = Field(60.0, gt=0, description="time between passes (30s, 5m; plain numbers are seconds)")
    older_than: Duration = Field(300.0, gt=0, description="a started task idle this long (5m; plain numbers are seconds) is presumed lost")
    created_older_than: Duration = Field(
        21600.0, gt=0,
        description="a created task not yet started this long (6h) is presumed lost: it may "
        "just wait in a queue, so set this above the longest backlog")
    max_attempts: int = Field(3, ge=0, description="resends per task before giving up")
    topic: str = Field("", description="topic to resend to (default: the task's type)")
    done_topic: str = Field("done", description="topic for the done task of a task given up on")
    owner: str = Field("", description="name of this replica in claims (default: host:pid)")
    once: bool = Field(False, description="one pass, then exit (for cron)")


class RecoverApp(LifecycleApp):
    """Finds lost tasks in ``ledger`` and resends them on ``producer``.

    The app takes ownership of the ledger and producer it is given: it starts, stops and
    closes them. ``clock`` (Unix seconds) decides which scheduled tasks are due and how long
    a record has been idle; ``sleep`` waits between passes. Both are injectable for tests.
    """

    Settings: ClassVar[type[AppSettings]] = RecoverSettings

    def __init__(
        self,
        *,
        ledger: Ledger,
        producer: Producer,
        task_lists: Sequence[str] = (),
        interval: float = 60.0,
        older_than: float = 300.0,
        created_older_than: float = 21600.0,
        max_attempts: int = 3,
        topic: str = "",
        done_topic: str = "done",
        owner: str = "",
        once: bool = False,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if older_than <= 0 or created_older_than <= 0 or interval <= 0 or max_attempts < 0:
            raise ConfigError("recover needs interval > 0, older_than > 0, created_older_than > 0 "
                              "and max_attempts >= 0")
        self.ledger = ledger
        self.producer = producer
        self.task_lists = list(task_lists)
        self.interval = interval
        self.older_than = older_than
        self.max_attempts = max_attempts
        self.topic = topic
        self.done_topic = done_topic
        self.owner = owner or replica_name()
        #: created records may just be queued: they count as lost only after this long
        self.created_older_than = created_older_than
        self.once = once
        self.lifecycle = Lifecycle("recover", self.stats, logger=logger, parts=[producer],
                                   ledger=ledger, status_host=status_host,
                                   status_port=status_port)
        self.clock = clock
        self.sleep = sleep
        self._stopped = asyncio.Event()
        self._started = time.monotonic()
        self.counts = {k: 0 for k in ("passes", "seen", "queued", "resent", "gave_up", "released",
                                      "claimed_elsewhere", "send_errors", "ledger_errors")}
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "bus": producer.info().get("bus"), "ledger": type(ledger).__name__,
            "task_lists": ",".join(self.task_lists) or "all", "topic": topic or "(task type)",
            "interval": format_duration(interval), "older_than": format_duration(older_than),
            "created_older_than": format_duration(created_older_than),
            "max_attempts": max_attempts, "owner": self.owner, "once": once or None,
            "status_port": status_port or None,
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> RecoverApp:
        """Build the app from ``RecoverSettings``; no I/O.

        Raises:
            ConfigError: no ledger, or a bad bus or ledger URL.
        """
        assert isinstance(settings, RecoverSettings)
        if not settings.ledger:
            raise ConfigError("recover needs a ledger: set --ledger (e.g. sqlite:./taskbus-data/ledger.db)")
        app = cls(
            ledger=open_ledger(settings.ledger),
            producer=open_producer(settings.producer_url, credentials=settings.credentials()),
            task_lists=settings.task_lists, interval=settings.interval,
            older_than=settings.older_than, created_older_than=settings.created_older_than,
            max_attempts=settings.max_attempts,
            topic=settings.topic, done_topic=settings.done_topic, owner=settings.owner,
            once=settings.once, status_port=settings.status_port, status_host=settings.status_host,
        )
        app.startup.update(bus=settings.producer_url, ledger=settings.ledger)
        return app

    async def work(self) -> int:
        """A pass every ``interval`` until stopped (one pass with ``once``).

        Returns 1 when ``once`` and the pass met a ledger or bus failure, else 0.
        """
        while True:
            before = self._work_done()
            clean = await self.run_pass()
            if clean and self._work_done() == before:
                logger.log(logging.INFO if self.once else logging.DEBUG,
                           "nothing to recover: no task idle longer than %s (not started: %s) in %s",
                           format_duration(self.older_than), format_duration(self.created_older_than),
                           redact_url(str(self.startup["ledger"])))
            if self.once:
                return 0 if clean else 1
            if await wait_or_stop(self._stopped, self.interval, self.sleep):
                return 0

    def _work_done(self) -> int:
        """Tasks resent, released or given up so far: what a pass with work changes."""
        return self.counts["resent"] + self.counts["released"] + self.counts["gave_up"]

    async def stop(self) -> None:
        """Finish the record in hand and return from ``run()``. Idempotent."""
        self._stopped.set()

    async def run_pass(self) -> bool:
        """Release due tasks and resend lost ones of every task list; False on any failure."""
        self.counts["passes"] += 1
        failures = self.counts["ledger_errors"] + self.counts["send_errors"]
        try:
            names = [name for name in self.task_lists or await self.ledger.task_lists()
                     if not is_key_list(name)]  # cron's fire keys are no tasks
        except LedgerError as err:
            self.counts["ledger_errors"] += 1
            logger.error("cannot list the ledger's task lists: %s", err)
            return False
        # a live count on a terminal for a by-hand `recover --once`; logs stay clean otherwise
        progress = Progress(0, sys.stderr, label="recover: records seen") if self.once and sys.stderr.isatty() else None
        for name in names:
            if self._stopped.is_set():
                break
            try:
                await self._release(name)
                async for record in self.ledger.outstanding(name, self._floor()):
                    if self._stopped.is_set():
                        break
                    await self._recover(record)
                    if progress is not None:
                        progress.advance()
            except LedgerError as err:
                self.counts["ledger_errors"] += 1
                logger.error("ledger failed while recovering %r, next pass retries: %s", name, err)
        if progress is not None:
            progress.close()
        return failures == self.counts["ledger_errors"] + self.counts["send_errors"]

    async def _release(self, task_list: str) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        for entry in await self.ledger.due(task_list, now):  # every kind, each to its topic
            task, topic = entry.task, entry.topic
            if await self._send(topic, task, "scheduled task"):
                self.counts["released"] += 1
                logger.info("task %s (%s) scheduled for now: sent to %r", task.id, task_list, topic)
            # not sent: it is recorded as created now, so a later pass resends it

    def _floor(self) -> float:
        """The shorter threshold: ``outstanding`` lists every record idle that long."""
        return min(self.older_than, self.created_older_than)

    def _threshold(self, record: LedgerRecord) -> float:
        """How long ``record`` must be idle to count as lost: much longer when no worker has
        taken it yet, since it may only be queued."""
        return self.created_older_than if record.state is State.CREATED else self.older_than

    async def _recover(self, record: LedgerRecord) -> None:
        self.counts["seen"] += 1
        task = record.task
        threshold = self._threshold(record)
        if threshold > self._floor() and self.clock() - record.updated_at < threshold:
            if record.state is State.CREATED:
                self.counts["queued"] += 1  # not started yet: most likely waiting in a queue
            return
        if not await self.ledger.claim(record.task_list, task.id, self.owner, threshold,
                                       older_than=threshold):
            self.counts["claimed_elsewhere"] += 1
            return
        if record.attempts >= self.max_attempts:
            done = resendable(task)
            done.end(Result.ERROR, f"gave up after {record.attempts} attempts")
            if await self._send(self.done_topic, done, "give-up done task"):
                await self.ledger.done(record.task_list, task.id)
                self.counts["gave_up"] += 1
                logger.warning("task %s (%s) still lost after %d resends: gave up", task.id,
                               record.task_list, record.attempts)
            return
        topic = self.topic or task.type
        if await self._send(topic, resendable(task), "lost task"):
            self.counts["resent"] += 1
            logger.info("task %s (%s) idle for %s: resent to %r (attempt %d of %d)", task.id,
                        record.task_list, format_duration(self.clock() - record.updated_at), topic,
                        record.attempts + 1, self.max_attempts)

    async def _send(self, topic: str, task: Task, what: str) -> bool:
        try:
            await self.producer.send(topic, task.to_json(), key=task.id or None)
        except BusError as err:
            self.counts["send_errors"] += 1
            logger.error("cannot send %s %s to %r, a later pass retries: %s", what, task.id, topic, err)
            return False
        return True

    def stats(self) -> dict[str, object]:
        """Counters for ``/stats``: passes, records seen, resent, given up, released, errors."""
        return {
            "app": "recover",
            "runtime": round(time.monotonic() - self._started, 3),
            "owner": self.owner,
            "task_lists": self.task_lists or "all",
            **self.counts,
            "producer": self.producer.info(),
        }
