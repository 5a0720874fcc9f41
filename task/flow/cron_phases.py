"""Cron phases: when each phase a cron starts fires next, kept across workflow reloads.

Each cron phase gets a ``CronSchedule`` (``task.apps.schedule``: wall time in the rule's
zone, each wall time once across DST). A reload keeps the schedule of a phase whose cron did
not change, so a tick is neither lost nor fired twice by a reload; a new or changed phase
starts from the reload's time. Missed ticks (a loop that woke late) fire the latest only,
as ``taskbus cron``'s default ``catch_up = "skip"``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from croniter import croniter  # type: ignore[import-untyped]

from task.apps.schedule import CronSchedule, instant
from task.flow.workflow import Phase

__all__ = ["CronPhases", "previous_fire"]

logger = logging.getLogger(__name__)

_Key = tuple[str, str, str, str]


def _key(phase: Phase) -> _Key:
    return (phase.workflow, phase.key, phase.rule.cron, phase.rule.timezone)


def previous_fire(phase: Phase, now: datetime) -> datetime:
    """The last time (UTC) ``phase``'s cron fired at or before ``now``."""
    tz = phase.rule.tz
    expr = phase.rule.cron
    walk = croniter(expr, now.astimezone(tz).replace(tzinfo=None),
                    second_at_beginning=len(expr.split()) == 6)
    return instant(walk.get_prev(datetime), tz)


class CronPhases:
    """The schedules of the cron phases of the loaded workflows."""

    def __init__(self) -> None:
        self._schedules: dict[_Key, tuple[Phase, CronSchedule]] = {}
        #: ticks skipped because the loop woke after more than one
        self.missed = 0

    def refresh(self, phases: Iterable[Phase], now: datetime) -> None:
        """Follow the cron phases now loaded: keep unchanged ones, start new ones after
        ``now``, drop removed ones."""
        kept: dict[_Key, tuple[Phase, CronSchedule]] = {}
        for phase in phases:
            key = _key(phase)
            known = self._schedules.get(key)
            if known is not None:
                kept[key] = (phase, known[1])
            else:
                kept[key] = (phase, phase.rule.schedule(now))
                logger.info("cron phase %s of %s: next run at %s", phase.key, phase.workflow,
                            kept[key][1].next_at.isoformat())
        self._schedules = kept

    def pop_due(self, now: datetime) -> list[tuple[Phase, datetime]]:
        """The ticks due by ``now`` (the latest one per phase), oldest first."""
        due: list[tuple[Phase, datetime]] = []
        for phase, schedule in self._schedules.values():
            ticks = schedule.pop_due(now)
            if len(ticks) > 1:
                self.missed += len(ticks) - 1
                logger.warning("cron phase %s of %s: skipping %d missed runs", phase.key,
                               phase.workflow, len(ticks) - 1)
            if ticks:
                due.append((phase, ticks[-1]))
        return sorted(due, key=lambda item: item[1])

    def next_at(self) -> datetime | None:
        """The soonest next tick of any phase, or None without cron phases."""
        return min((s.next_at for _, s in self._schedules.values()), default=None)

    def times(self, phase: Phase, now: datetime) -> tuple[datetime, datetime]:
        """``(next, previous)`` fire times (UTC) of ``phase`` for ``/info``."""
        known = self._schedules.get(_key(phase))
        upcoming = known[1].next_at if known is not None else phase.rule.schedule(now).next_at
        return upcoming.astimezone(UTC), previous_fire(phase, now)
