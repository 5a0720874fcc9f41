"""``taskbus batch``: one task per time step between two times (a backfill).

``taskbus batch --type T --template 's3://b/{slug}/' --from 2024-01-01 --to 2024-01-31T23``
sends one task per hour (``--every 2h``, ``--daily``), ``--to`` included. Times without a
zone are wall times in ``--timezone`` (default UTC); a daily step keeps the wall-clock time
across DST changes. A progress bar goes to stderr on a terminal, plain lines otherwise;
``--dry-run`` prints the tasks instead of sending them. The HTTP app's ``POST /batch`` uses
the same ``make_plan``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from task.apps.lifecycle import Lifecycle, LifecycleApp
from task.apps.send import parse_meta_pairs
from task.apps.sender import TaskSender
from task.bus.base import Producer
from task.bus.registry import open_producer
from task.errors import BusError, ConfigError
from task.ledger.base import Ledger
from task.ledger.registry import open_ledger
from task.progress import Progress
from task.settings import AppSettings, BusSettings
from task.task import Task
from task.timetemplate import parse_offset, parse_time, render, shift

__all__ = ["BatchApp", "BatchPlan", "BatchSettings", "Progress", "make_plan"]

logger = logging.getLogger(__name__)

#: Most tasks one batch may create unless told otherwise: a typo in --from should not
#: flood the bus with millions of tasks.
MAX_TASKS = 1_000_000
_DAY = timedelta(days=1)


class BatchSettings(BusSettings):
    """``taskbus batch``: one task per time step between two times (a backfill)."""

    type: str = Field("", description="task type (required)")
    template: str = Field("", description="info template, rendered with each time step")
    start: str = Field(
        "",
        description="first time: 2024-01-31, 2024-01-31T05, now, today, -3d",
        json_schema_extra={"short": "--from"},
    )
    end: str = Field(
        "",
        description="last time, included (default: the first)",
        json_schema_extra={"short": "--to"},
    )
    every: str = Field("1h", description="step between tasks: 1h, 15m, 1h30m, 2d, ... (plain numbers are seconds)")
    daily: bool = Field(False, description="one task per day (--every 1d)")
    timezone: str = Field("UTC", description="zone of times given without one, and of the template")
    topic: str = Field("", description="topic to send to (default: the task type)")
    job: str = Field("", description="the tasks' job")
    meta: list[str] = Field(default_factory=list, description="meta key=value pairs")
    max_tasks: int = Field(MAX_TASKS, ge=1, description="refuse a batch of more tasks than this")
    dry_run: bool = Field(False, description="print the tasks instead of sending them")


@dataclass(frozen=True)
class BatchPlan:
    """What a batch creates: tasks of ``type`` at ``start``, ``start + every``, ... ``end``."""

    type: str
    template: str
    start: datetime
    end: datetime
    every: timedelta
    topic: str = ""
    job: str = ""
    meta: Mapping[str, Sequence[str]] = field(default_factory=dict)

    # Instants are compared in UTC: Python compares (and subtracts) two times of the same
    # zone by their wall clocks, which is wrong across a DST change.

    def times(self) -> Iterator[datetime]:
        """The time steps, ``end`` included; whole-day steps keep the wall-clock time."""
        end = self.end.astimezone(UTC)
        k = 0
        while (at := shift(self.start, self.every * k)).astimezone(UTC) <= end:
            yield at
            k += 1

    def count(self) -> int:
        """How many tasks the plan makes."""
        span = self.end.astimezone(UTC) - self.start.astimezone(UTC)
        if span < timedelta(0):
            return 0
        if self.every % _DAY:  # elapsed steps: plain arithmetic
            return span // self.every + 1
        return sum(1 for _ in self.times())

    def tasks(self) -> Iterator[tuple[datetime, Task]]:
        """Each time step and its new task (a fresh id each time it is iterated)."""
        meta = {k: list(v) for k, v in self.meta.items()} or None
        for at in self.times():
            yield (
                at,
                Task.new(
                    self.type, render(self.template, at, meta=meta), job=self.job or None, meta=meta
                ),
            )


def _step(every: str) -> timedelta:
    """The step between tasks: an offset (``1h``, ``90m``, ``1h30m``, ``1d``), or a plain
    number of seconds as every duration setting takes.

    Raises:
        ValueError: ``every`` is neither.
    """
    text = every.strip()
    if text.replace(".", "", 1).isdigit():
        return timedelta(seconds=float(text))
    return parse_offset(text)


def make_plan(
    *,
    type: str,
    template: str,
    start: str,
    end: str = "",
    every: str = "1h",
    daily: bool = False,
    timezone: str = "UTC",
    topic: str = "",
    job: str = "",
    meta: Mapping[str, Sequence[str]] | None = None,
    max_tasks: int = MAX_TASKS,
    now: datetime | None = None,
) -> BatchPlan:
    """Check what a user asked for and turn it into a plan.

    Raises:
        ConfigError: a missing type or start, a bad time, step or zone, ``end`` before
            ``start``, or more than ``max_tasks`` tasks; the message names the option.
    """
    if not type:
        raise ConfigError("a batch needs a task type: --type T")
    if not start:
        raise ConfigError(
            "a batch needs a first time: --from 2024-01-31 (or 2024-01-31T05, now, -3d)"
        )
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(
            f"unknown time zone {timezone!r}; use an IANA name like UTC or Europe/Paris"
        ) from err
    try:
        first = parse_time(start, tz, now=now)
        last = parse_time(end, tz, now=now) if end else first
    except ValueError as err:
        raise ConfigError(f"--from/--to: {err}") from err
    try:
        step = _DAY if daily else _step(every)
    except ValueError as err:
        raise ConfigError(f"--every: {err}") from err
    if step <= timedelta(0):
        raise ConfigError(f"--every {every!r} must be a positive step, e.g. 1h or 1d")
    if last.astimezone(UTC) < first.astimezone(UTC):
        raise ConfigError(f"--to {last.isoformat()} is before --from {first.isoformat()}")
    plan = BatchPlan(type, template, first, last, step, topic, job, dict(meta or {}))
    if (n := plan.count()) > max_tasks:
        raise ConfigError(
            f"the batch would create {n} tasks, more than the limit {max_tasks}; "
            "narrow --from/--to, widen --every or raise --max-tasks"
        )
    return plan


class BatchApp(LifecycleApp):
    """Creates the tasks of a ``BatchPlan``: sends them, or prints them on a dry run.

    The app takes ownership of the producer and ledger it is given: it starts and stops
    them (a dry run touches neither).
    """

    Settings: ClassVar[type[AppSettings]] = BatchSettings

    def __init__(
        self,
        *,
        plan: BatchPlan,
        producer: Producer,
        ledger: Ledger | None = None,
        dry_run: bool = False,
        out: TextIO | None = None,
        progress: TextIO | None = None,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
    ) -> None:
        self.plan = plan
        self.sender = TaskSender(producer, ledger)
        # a dry run touches no bus, ledger or port
        self.lifecycle = Lifecycle("batch", self.stats, logger=logger,
                                   parts=[] if dry_run else [producer],
                                   ledger=None if dry_run else ledger, status_host=status_host,
                                   status_port=0 if dry_run else status_port)
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.progress_stream = progress if progress is not None else sys.stderr
        self._stopping = False
        self.total = plan.count()
        self.created = 0
        self.last_at: datetime | None = None

    @classmethod
    def from_settings(cls, settings: AppSettings) -> BatchApp:
        """Build the app from ``BatchSettings``; no I/O.

        Raises:
            ConfigError: see ``make_plan``; a bad bus or ledger URL.
        """
        assert isinstance(settings, BatchSettings)
        plan = make_plan(
            type=settings.type,
            template=settings.template,
            start=settings.start,
            end=settings.end,
            every=settings.every,
            daily=settings.daily,
            timezone=settings.timezone,
            topic=settings.topic,
            job=settings.job,
            meta=parse_meta_pairs(settings.meta),
            max_tasks=settings.max_tasks,
        )
        return cls(
            plan=plan,
            producer=open_producer(settings.producer_url, credentials=settings.credentials()),
            ledger=open_ledger(settings.ledger)
            if settings.ledger and not settings.dry_run
            else None,
            dry_run=settings.dry_run,
            status_port=settings.status_port,
            status_host=settings.status_host,
        )

    async def work(self) -> int:
        """Create every task of the plan; 0 when all went out, 1 when the bus failed or
        the app was stopped (the message says where to resume)."""
        if self.dry_run:
            for _, task in self.plan.tasks():
                self.out.write(f"{task}\n")
                self.created += 1
            self.out.flush()
            return 0
        topic = self.plan.topic or self.plan.type
        progress = Progress(self.total, self.progress_stream, label=f"{self.plan.type} -> {topic}")
        try:
            for at, task in self.plan.tasks():
                if self._stopping:
                    return self._incomplete(at, "stopped")
                try:
                    await self.sender.send(task, topic)
                except BusError as err:
                    return self._incomplete(at, f"bus error: {err}")
                self.created += 1
                self.last_at = at
                progress.advance()
        finally:
            progress.close()
        logger.info("sent %d %s tasks to %r", self.created, self.plan.type, topic)
        return 0

    def _incomplete(self, at: datetime, why: str) -> int:
        logger.error(
            "%s after %d of %d tasks; resume with --from %s",
            why,
            self.created,
            self.total,
            at.isoformat(timespec="seconds"),
        )
        return 1

    async def stop(self) -> None:
        """Stop before the next task. Idempotent."""
        self._stopping = True

    def stats(self) -> dict[str, object]:
        """Progress and counters, for ``/stats``."""
        return {
            "app": "batch",
            "type": self.plan.type,
            "total": self.total,
            "created": self.created,
            **self.sender.stats(),
        }
