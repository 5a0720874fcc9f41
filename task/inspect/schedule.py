"""What the ledger's schedule holds per topic: tasks delayed and failed tasks retrying.

The bus cannot see these: they wait in the ledger until due and are sent then. ``taskbus
topics --ledger URL`` adds them to the bus's counts of the topic they will be sent to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from task.ledger.base import Ledger, ScheduleKind, ScheduleReader

__all__ = ["SCHEDULE_LIMIT", "ScheduledCounts", "scheduled_per_topic"]

logger = logging.getLogger(__name__)

#: scheduled tasks read per task list; more are counted as this many (and said so)
SCHEDULE_LIMIT = 100_000


@dataclass
class ScheduledCounts:
    """Tasks of one topic waiting in the ledger's schedule."""

    #: sent later on purpose (a delay, a time, a workflow step)
    delayed: int = 0
    #: failed and waiting out their backoff (``taskbus retry``)
    retrying: int = 0


async def scheduled_per_topic(ledger: Ledger) -> dict[str, ScheduledCounts]:
    """Counts per destination topic over every task list; empty for a ledger that cannot
    list its schedule (logged).

    Raises:
        LedgerError: the database cannot be reached.
    """
    if not isinstance(ledger, ScheduleReader):
        logger.warning("%s cannot list its schedule: no delayed or retrying counts", type(ledger).__name__)
        return {}
    counts: dict[str, ScheduledCounts] = {}
    for task_list in await ledger.task_lists():
        waiting = await ledger.scheduled(task_list, SCHEDULE_LIMIT)
        if len(waiting) >= SCHEDULE_LIMIT:
            logger.warning("task list %r has at least %d scheduled tasks: counted as %d",
                           task_list, SCHEDULE_LIMIT, SCHEDULE_LIMIT)
        for item in waiting:
            entry = counts.setdefault(item.topic, ScheduledCounts())
            if item.kind is ScheduleKind.RETRY:
                entry.retrying += 1
            else:
                entry.delayed += 1
    return counts
