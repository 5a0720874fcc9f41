"""The releaser: sends delayed tasks held in the ledger once they are due.

Any running worker (and ``taskbus recover``, which releases every kind) with a ledger
releases what is due. ``ledger.due`` moves each due task from the schedule to the
outstanding records in one atomic step, which is the claim: of several replicas polling one
ledger, exactly one gets each task, so each is released once. A task whose send then fails
is scheduled again a few seconds later; should that fail too, its outstanding record stays
for ``taskbus recover`` to find, so none is lost.

``DelayReleaser`` is a part of the app that runs it (``start``/``stop``): ``start`` releases
what is due at once, before the app's consumer reads anything (so a finite file-bus worker
takes the released tasks in the same run), then polls just after each whole second (due
times are whole seconds: a task is released within milliseconds of its time, not up to a
poll interval late); ``stop`` logs how many delayed tasks still wait and when the next is due. ``release_scheduled`` is the one release step, for
every kind: retries and workflow steps are released the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from task import rfc3339
from task.apps.lifecycle import wait_or_stop
from task.bus.base import Producer
from task.credentials import Credentials
from task.errors import BusError, LedgerError
from task.ledger.base import Ledger, ScheduledTask, ScheduleKind, ScheduleReader

__all__ = ["DelayReleaser", "Released", "release_scheduled"]

logger = logging.getLogger(__name__)

#: Seconds between looks at the ledger for due delayed tasks.
POLL_INTERVAL = 1.0
#: Seconds after a whole poll interval that a poll runs (clocks and timers are not exact).
SLACK = 0.005
#: Seconds before a released task whose send failed is tried again.
SEND_AGAIN_AFTER = 5.0
#: Released tasks sent at once (in due order, this many at a time).
SEND_AT_ONCE = 64
#: Scheduled tasks read per task list to count what still waits (more shows as "N+").
COUNT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Released:
    """What one release step did."""

    sent: list[ScheduledTask]
    #: due tasks whose send failed: scheduled again ``SEND_AGAIN_AFTER`` later
    failed: int = 0


async def release_scheduled(
    ledger: Ledger, producer: Producer, task_lists: Sequence[str], kind: ScheduleKind, now: datetime
) -> Released:
    """Take every task of ``kind`` due at ``now`` from the schedule of ``task_lists`` and send
    each to its topic.

    A task that cannot be sent is scheduled again ``SEND_AGAIN_AFTER`` seconds later (its
    outstanding record stays too, for ``recover``, should that fail as well).

    Raises:
        LedgerError: the ledger could not be read (nothing was taken then).
    """
    sent: list[ScheduledTask] = []
    failed = 0

    async def one(name: str, entry: ScheduledTask) -> None:
        nonlocal failed
        try:
            await producer.send(entry.topic, entry.task.to_json(), key=entry.task.id or None)
        except BusError as err:
            failed += 1
            logger.error("cannot send %s task %s to %r, trying again in %gs: %s", kind,
                         entry.task.id, entry.topic, SEND_AGAIN_AFTER, err)
            try:
                await ledger.schedule(entry.task, name, now + timedelta(seconds=SEND_AGAIN_AFTER),
                                      topic=entry.topic, kind=kind)
            except LedgerError as again:
                logger.error("and the ledger refused it back (recover resends it): %s", again)
            return
        sent.append(entry)

    for name in task_lists:
        due = await ledger.due(name, now, kind=kind)
        # a few sends at once: on a broker each waits for its confirmation, and a second's
        # worth of tasks released one by one would arrive late by all those round trips
        for start in range(0, len(due), SEND_AT_ONCE):
            await asyncio.gather(*(one(name, entry) for entry in due[start:start + SEND_AT_ONCE]))
    return Released(sent, failed)


class DelayReleaser:
    """Releases due delayed tasks of ``task_lists`` (every list of the ledger when empty)
    to ``producer`` while it runs.

    With ``owns=False`` the releaser never closes the ledger and producer it is given:
    whoever opened them does, after ``stop()``; with ``owns=True`` (``from_urls``) ``stop()``
    stops the producer and closes the ledger too. ``clock`` (aware datetimes) and ``sleep``
    are injectable so tests move time without waiting.
    """

    def __init__(
        self,
        ledger: Ledger,
        producer: Producer,
        *,
        task_lists: Sequence[str] = (),
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        owns: bool = False,
    ) -> None:
        self.ledger = ledger
        self.owns = owns
        self.producer = producer
        self.task_lists = list(task_lists)
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.released = 0
        self.send_errors = 0
        self.ledger_errors = 0
        self._failing = 0  #: failed reads in a row (the outage is logged once)
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    @classmethod
    def from_urls(cls, ledger: str, bus: str, *, credentials: Credentials,
                  task_lists: Sequence[str] = ()) -> DelayReleaser:
        """A releaser with its own ledger and producer, opened from their URLs (no I/O), closed
        by ``stop()``: an app's own parts may close before it stops.

        Raises:
            ConfigError: a bad ledger or bus URL.
        """
        from task.bus.registry import open_producer
        from task.ledger.registry import open_ledger

        return cls(open_ledger(ledger), open_producer(bus, credentials=credentials),
                   task_lists=task_lists, owns=True)

    async def _lists(self) -> list[str]:
        return self.task_lists or await self.ledger.task_lists()

    async def release_due(self) -> int:
        """Send every delayed task due now; how many were sent. A ledger failure is logged
        and counted: the next poll tries again."""
        try:
            done = await release_scheduled(self.ledger, self.producer, await self._lists(),
                                           ScheduleKind.DELAY, self.clock())
        except LedgerError as err:
            self.ledger_errors += 1
            self._failing += 1
            if self._failing == 1:  # once per outage: the poll runs every second
                logger.error("cannot read due delayed tasks from the ledger, trying again every poll: %s", err)
            return 0
        if self._failing:
            logger.warning("delayed tasks: the ledger is back after %d failed reads", self._failing)
            self._failing = 0
        self.send_errors += done.failed
        self.released += len(done.sent)
        if len(done.sent) > 1 and logger.isEnabledFor(logging.DEBUG):
            for entry in done.sent:
                logger.debug("delayed task %s (%s) due %s: sent to %r", entry.task.id,
                             entry.task.type, entry.task.get_meta("run_at", "?"), entry.topic)
        if len(done.sent) == 1:
            entry = done.sent[0]
            logger.info("delayed task %s (%s) due %s: sent to %r", entry.task.id, entry.task.type,
                        entry.task.get_meta("run_at", "?"), entry.topic)
        elif done.sent:
            logger.info("%d delayed tasks due: sent", len(done.sent))
        return len(done.sent)

    async def waiting(self) -> tuple[int, datetime | None]:
        """How many delayed tasks still wait (counted up to ``COUNT_LIMIT`` per list) and
        when the next is due; ``(0, None)`` for a ledger that cannot list its schedule.

        Raises:
            LedgerError: the ledger cannot be read.
        """
        if not isinstance(self.ledger, ScheduleReader):
            return 0, None
        count, soonest = 0, None
        for name in await self._lists():
            entries = [e for e in await self.ledger.scheduled(name, COUNT_LIMIT)
                       if e.kind is ScheduleKind.DELAY]
            count += len(entries)
            if entries and (soonest is None or entries[0].at < soonest):
                soonest = entries[0].at
        return count, None if soonest is None else datetime.fromtimestamp(soonest, UTC)

    async def start(self) -> None:
        """Release what is due now, then keep releasing every ``poll_interval``. Idempotent."""
        if self._loop is not None:
            return
        self._stopping.clear()
        await self.release_due()
        self._loop = asyncio.create_task(self._poll(), name="delay-releaser")

    async def stop(self) -> None:
        """Stop polling and log what still waits ("N delayed, next at ..."). Idempotent."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        self._stopping.set()
        try:
            await loop
            await self._log_waiting()
        finally:
            if self.owns:
                try:
                    await self.producer.stop()
                finally:
                    await self.ledger.close()

    async def _log_waiting(self) -> None:
        try:
            count, soonest = await self.waiting()
        except LedgerError as err:
            logger.debug("cannot count the delayed tasks left: %s", err)
            return
        if count:
            shown = f"{count}+" if count >= COUNT_LIMIT else str(count)
            when = rfc3339.format_utc(soonest) if soonest else "?"
            logger.info("%s delayed, next at %s", shown, when)

    def _until_next_poll(self) -> float:
        """Seconds to the next multiple of ``poll_interval`` on the clock, plus ``SLACK``:
        due times are whole seconds, so a poll just after one finds its tasks at once."""
        now = self.clock().timestamp()
        return self.poll_interval - now % self.poll_interval + SLACK

    async def _poll(self) -> None:
        while not await wait_or_stop(self._stopping, self._until_next_poll(), self.sleep):
            await self.release_due()
