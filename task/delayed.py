"""Delayed tasks: send a task now that a worker gets no earlier than a given time.

The time travels in the task's meta as ``run_at=`` (RFC 3339, UTC, whole seconds), which the
Go parts keep. Where the broker holds messages back itself (a ``DelayingProducer``: NSQ
``DPUB``, JetStream message schedules) it does the waiting; otherwise the ledger's schedule
is the holding pen (``ScheduleKind.DELAY``, with the task's topic) and any worker or
taskmaster with that ledger releases it when due (``task.delay_release``). A delayed task in
the ledger survives every restart and can be cancelled until it is released.

A task delayed natively is not recorded in the ledger before its time: an outstanding record
would make ``taskbus recover`` send it again early. The worker records it when it starts it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from task import rfc3339
from task.bus.base import Producer
from task.bus.delaying import DelayingProducer, NativeDelayUnavailable
from task.errors import ConfigError
from task.ledger.base import Ledger, ScheduleCanceller, ScheduleKind
from task.task import Task

__all__ = [
    "RUN_AT",
    "CancelOutcome",
    "CancelResult",
    "DelayedSend",
    "cancel_delayed",
    "check_delayable",
    "due_time",
    "run_at",
    "send_delayed",
]

logger = logging.getLogger(__name__)

#: The meta key that carries a delayed task's due time.
RUN_AT = "run_at"


@dataclass(frozen=True, slots=True)
class DelayedSend:
    """What ``send_delayed`` did with one task."""

    id: str
    #: when the task is due (aware, UTC, whole seconds: what its ``run_at`` says)
    at: datetime
    #: "native": the broker holds it; "ledger": the ledger's schedule holds it (cancellable)
    how: Literal["native", "ledger"]
    #: the task as it was sent or scheduled (with ``run_at`` in its meta)
    task: Task


class CancelOutcome(StrEnum):
    """What ``cancel_delayed`` found."""

    CANCELLED = "cancelled"  #: it was waiting in the schedule and is removed: it never runs
    RELEASED = "released"  #: it was released already (sent to its topic, outstanding): too late
    UNKNOWN = "unknown"  #: no delayed task with that id in the ledger (never, or long done)


@dataclass(frozen=True, slots=True)
class CancelResult:
    """The outcome of one cancel, with the one line to show a user."""

    outcome: CancelOutcome
    id: str
    #: the task list it was found in ("" when unknown)
    task_list: str = ""
    #: when it was (or had been) due, where known
    at: datetime | None = None

    @property
    def message(self) -> str:
        """One line saying what happened, for the CLI and logs."""
        when = "" if self.at is None else f" (due {rfc3339.format_utc(self.at)})"
        if self.outcome is CancelOutcome.CANCELLED:
            return f"cancelled delayed task {self.id} of {self.task_list!r}{when}: it will not run"
        if self.outcome is CancelOutcome.RELEASED:
            return (f"task {self.id} of {self.task_list!r} was released already{when} and is on "
                    "its topic: too late to cancel")
        return (f"no delayed task {self.id} waits in the ledger: unknown id, done long ago, or "
                "delayed by the bus itself (NSQ, JetStream), which cannot be cancelled")


def due_time(*, at: datetime | None = None, delay: float | timedelta | None = None,
             now: datetime | None = None) -> datetime:
    """When a task sent ``now`` with ``delay`` (seconds) or for ``at`` is due: aware, UTC,
    rounded UP to the whole second the wire format keeps, so it is never early.

    Raises:
        ConfigError: both or neither of ``at`` and ``delay``, a negative delay, or a naive
            ``at``.
    """
    if (at is None) == (delay is None):
        raise ConfigError("give a delayed task either a time (at=) or a delay (delay=), not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(f"delay {delay!r} must be zero or more seconds")
        at = (now or datetime.now(UTC)) + timedelta(seconds=seconds)
    assert at is not None
    if at.tzinfo is None:
        raise ConfigError(f"time {at.isoformat()} has no time zone; give one (2026-12-01T05:00:00Z)")
    at = at.astimezone(UTC)
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return at


def run_at(task: Task) -> datetime | None:
    """The due time in a task's meta (``run_at``), or None when it has none or it is not
    RFC 3339."""
    text = task.get_meta(RUN_AT)
    return rfc3339.parse(text) if text else None


async def send_delayed(
    producer: Producer, topic: str, task: Task, at: datetime, *, ledger: Ledger | None
) -> DelayedSend:
    """Send ``task`` to ``topic`` so that it is delivered at ``at`` or later, never earlier.

    The task sent is a copy with ``run_at`` in its meta (``at`` rounded up to the second).
    Natively delayed where ``producer`` is a ``DelayingProducer`` that can hold it that long,
    otherwise held in the ``ledger``'s schedule until a releaser sends it. ``task`` itself
    is not changed.

    Raises:
        ConfigError: the bus has no native delay and there is no ledger, the task has no id
            while the ledger would hold it, or ``at`` is naive.
        BusError: the broker refused the delayed message.
        LedgerError: the ledger refused to schedule it.
    """
    at = due_time(at=at)
    held = task.copy()
    held.set_meta(RUN_AT, rfc3339.format_utc(at))
    check_delayable(producer, ledger)
    if isinstance(producer, DelayingProducer):
        try:
            await producer.send_at(topic, held.to_json(), at)
        except NativeDelayUnavailable as err:
            if ledger is None:
                raise _no_ledger(f"the {_bus(producer)} bus cannot hold this one ({err})") from err
        else:
            logger.debug("task %s delayed by the bus until %s", held.id, held.get_meta(RUN_AT))
            return DelayedSend(held.id, at, "native", held)
    assert ledger is not None
    if not held.id:
        raise ConfigError(f"a delayed task of type {held.type!r} needs an id for the ledger to hold it")
    await ledger.schedule(held, None, at, topic=topic, kind=ScheduleKind.DELAY)
    logger.debug("task %s held in the ledger until %s", held.id, held.get_meta(RUN_AT))
    return DelayedSend(held.id, at, "ledger", held)


def check_delayable(producer: Producer, ledger: Ledger | None) -> None:
    """Fail before anything is sent when tasks cannot be delayed at all: the bus has no native
    delay and there is no ledger. No I/O.

    Raises:
        ConfigError: one line naming both fixes.
    """
    if ledger is None and not isinstance(producer, DelayingProducer):
        raise _no_ledger(f"the {_bus(producer)} bus cannot delay a task by itself")


def _bus(producer: Producer) -> str:
    return str(producer.info().get("bus", type(producer).__name__))


def _no_ledger(why: str) -> ConfigError:
    return ConfigError(f"{why} and no ledger is set: add --ledger sqlite:./taskbus-data/ledger.db, "
                       "or use a bus with native delay (nsq, jetstream)")


async def cancel_delayed(ledger: Ledger, id: str, *, task_list: str | None = None) -> CancelResult:
    """Remove the delayed task ``id`` from the ledger's schedule before it is released.

    ``task_list`` (the task's type, unless it was scheduled under another list) narrows the
    search; without it every task list of the ledger is searched. Only delayed tasks
    (``ScheduleKind.DELAY``) are cancelled, never a pending retry or workflow step. The
    removal is atomic with the releasers' ``due``: a task is cancelled or released, not both.

    Raises:
        ConfigError: the ledger cannot remove a scheduled task (it is no ``ScheduleCanceller``).
        LedgerError: the ledger cannot be reached.
    """
    if not isinstance(ledger, ScheduleCanceller):
        raise ConfigError(f"the {type(ledger).__name__} ledger cannot cancel scheduled tasks")
    lists = [task_list] if task_list else await ledger.task_lists()
    for name in lists:
        removed = await ledger.unschedule(name, id, kind=ScheduleKind.DELAY)
        if removed is not None:
            logger.info("delayed task %s of %r cancelled", id, name)
            return CancelResult(CancelOutcome.CANCELLED, id, name, datetime.fromtimestamp(removed.at, UTC))
    for name in lists:
        record = await ledger.find(name, id)
        if record is not None and run_at(record.task) is not None:
            return CancelResult(CancelOutcome.RELEASED, id, name, run_at(record.task))
    return CancelResult(CancelOutcome.UNKNOWN, id)
