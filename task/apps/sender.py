"""What every taskmaster does with a task it made: record it in the ledger, then send it.

The ledger is the safety net, not the critical path: a ledger that fails or hangs is logged
and counted, and the task is sent anyway. Recording comes first so that a taskmaster dying
between the two leaves a record for ``recover`` to find, never a task nobody knows about.
"""

from __future__ import annotations

import asyncio
import logging

from task.bus.base import Producer
from task.ledger.base import Ledger
from task.task import Task

__all__ = ["TaskSender"]

logger = logging.getLogger(__name__)

#: Seconds a ledger write may take before the task is sent without it.
LEDGER_TIMEOUT = 5.0


class TaskSender:
    """Records each task as created (when a ledger is set) and sends it to its topic."""

    def __init__(
        self,
        producer: Producer,
        ledger: Ledger | None = None,
        *,
        ledger_timeout: float = LEDGER_TIMEOUT,
    ) -> None:
        self.producer = producer
        self.ledger = ledger
        self.ledger_timeout = ledger_timeout
        self.sent = 0
        #: tasks skipped because the ledger already had them (another replica sent them)
        self.duplicates = 0
        self.ledger_errors = 0

    async def _record(self, task: Task) -> bool:
        """True unless the ledger says the task was created before."""
        if self.ledger is None:
            return True
        try:
            return await asyncio.wait_for(self.ledger.created(task, task.type), self.ledger_timeout)
        except Exception as err:  # noqa: BLE001 - any ledger failure: the task goes out anyway
            self.ledger_errors += 1
            if self.ledger_errors == 1 or self.ledger_errors % 100 == 0:
                logger.warning(
                    "ledger could not record task %s (%s; %d failures so far): sending anyway",
                    task.id,
                    err or type(err).__name__,
                    self.ledger_errors,
                )
            return True

    async def send(self, task: Task, topic: str, *, skip_known: bool = False) -> bool:
        """Record ``task`` as created, then send it to ``topic``.

        With ``skip_known`` a task the ledger already holds is not sent (its id is derived
        from what it is, so another replica made and sent it); returns False then.

        Raises:
            BusError: the bus refused the task or could not be reached.
        """
        if not await self._record(task) and skip_known:
            self.duplicates += 1
            logger.debug("task %s already in the ledger: another replica sent it", task.id)
            return False
        await self.producer.send(topic, task.to_json(), key=task.id or None)
        self.sent += 1
        return True

    def stats(self) -> dict[str, object]:
        """Counters for an app's ``stats()``."""
        return {
            "sent": self.sent,
            "duplicates": self.duplicates,
            "ledger_errors": self.ledger_errors,
            "producer": self.producer.info(),
        }
