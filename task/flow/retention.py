"""The task store's daily clean-up: whole days older than the retention setting are forgotten.

``taskbus flow`` runs one ``Retention`` beside its engine. It cleans once when it starts (so
a flow that was down over midnight catches up), then every day at ``daily_at`` past UTC
midnight. A failed clean-up (database locked, Cassandra down) is logged and tried again
after ``retry_after``; it never stops flow. Several flow replicas may each run one: cleaning
a day twice removes nothing the second time.

Time comes from an injected clock (``task.apps.schedule.Clock``), so tests run a month of
clean-ups without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from task.duration import format_duration
from task.errors import TaskError
from task.flow.store import TaskStore, day_span

if TYPE_CHECKING:
    from task.apps.schedule import Clock

__all__ = ["Retention"]

logger = logging.getLogger(__name__)


class Retention:
    """Keep ``keep`` seconds of task history in ``store`` (0: keep everything).

    A day goes once it ended more than ``keep`` ago, so ``keep=7d`` shows today and the
    seven whole days before it.
    """

    def __init__(
        self,
        store: TaskStore,
        *,
        keep: float,
        clock: Clock | None = None,
        daily_at: float = 600.0,
        retry_after: float = 3600.0,
    ) -> None:
        if clock is None:
            from task.apps.schedule import SystemClock

            clock = SystemClock()
        self.store = store
        self.keep = keep
        self.clock = clock
        #: seconds past UTC midnight of the daily run
        self.daily_at = daily_at
        self.retry_after = retry_after
        #: events removed since start, for /info and the about page
        self.removed = 0
        #: when the last clean-up finished (None: not yet), and the error of a failed one
        self.last_run: datetime | None = None
        self.last_error = ""
        self._stopping = asyncio.Event()

    async def clean_once(self) -> int:
        """Forget the days that ended more than ``keep`` ago; returns the events removed.

        Raises:
            LedgerError: the store failed (``run`` logs it and tries again later).
        """
        cutoff = self.clock.now().timestamp() - self.keep
        removed = await self.store.clean(cutoff)
        self.removed += removed
        self.last_run, self.last_error = self.clock.now(), ""
        if removed:
            logger.info("task store: removed %d events older than %s", removed,
                        format_duration(self.keep))
        return removed

    def _until_next_run(self) -> float:
        now = self.clock.now()
        start = day_span(now.date())[0] + self.daily_at
        next_run = start if now.timestamp() < start else start + timedelta(days=1).total_seconds()
        return next_run - now.timestamp()

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock; True when ``stop`` came first."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, stopper):
                waiter.cancel()
        return self._stopping.is_set()

    async def run(self) -> None:
        """Clean now and then daily until ``stop``. Returns at once when ``keep`` is 0."""
        if self.keep <= 0:
            logger.info("task store retention is off: history is kept forever")
            return
        while not self._stopping.is_set():
            try:
                await self.clean_once()
                delay = self._until_next_run()
            except TaskError as err:
                self.last_error = str(err)
                logger.warning("task store clean-up failed (%s); trying again in %s", err,
                               format_duration(self.retry_after))
                delay = self.retry_after
            if await self._wait(delay):
                return

    async def stop(self) -> None:
        """End ``run`` at its next wait. Idempotent."""
        self._stopping.set()
