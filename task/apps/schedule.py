"""Cron schedules in a time zone: which instants a cron expression fires at.

croniter walks the wall-clock times of an expression (5 fields, 6 with seconds first as in
Go's cron, or a descriptor such as ``@hourly``); this module turns them into instants so that
each wall time fires once: a time in a DST gap fires at the end of the gap (and several such
times fire once there), a time in the overlap fires at its first occurrence. Also the clock
a scheduler waits on, injectable so a test runs a simulated day in milliseconds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

from task.errors import ConfigError

__all__ = ["Clock", "CronSchedule", "SystemClock", "instant", "is_valid_cron", "zone"]


def _six_fields(expr: str) -> bool:
    return len(expr.split()) == 6


def is_valid_cron(expr: str) -> bool:
    """True when croniter reads ``expr`` (6 fields meaning seconds first)."""
    return bool(croniter.is_valid(expr, second_at_beginning=_six_fields(expr)))


def zone(name: str) -> ZoneInfo:
    """The time zone called ``name``.

    Raises:
        ConfigError: no such zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ConfigError(
            f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Paris"
        ) from err


class Clock(Protocol):
    """Where the app reads the time and waits: the system, or a test's simulated clock."""

    def now(self) -> datetime:
        """The current time, aware."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; may be cancelled."""


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant (in UTC) a naive wall time in ``tz`` fires: its first occurrence when it
    happens twice, the end of the gap when it does not happen at all.

    UTC because Python never finds an ambiguous local time equal to one in another zone.
    """
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return first.astimezone(UTC)
    # In a gap: the offset changes between the two readings of ``wall``; find where.
    lo = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    hi = int(first.timestamp())
    lo, hi = min(lo, hi), max(lo, hi)
    after = datetime.fromtimestamp(hi, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


class CronSchedule:
    """The fire times (UTC) of a cron expression in ``tz`` after ``after``, strictly increasing."""

    def __init__(self, expr: str, tz: ZoneInfo, after: datetime) -> None:
        self.expr = expr
        self.tz = tz
        self._times = croniter(
            expr, after.astimezone(tz).replace(tzinfo=None), second_at_beginning=_six_fields(expr)
        )
        self._last = after.astimezone(UTC)
        self.next_at = self._advance()

    def _advance(self) -> datetime:
        while True:
            at = instant(self._times.get_next(datetime), self.tz)
            if at > self._last:  # the DST overlap and gap map several wall times to one
                self._last = at
                return at

    def pop_due(self, now: datetime) -> list[datetime]:
        """Fire times (UTC) up to ``now`` not handed out yet."""
        now = now.astimezone(UTC)
        due = []
        while self.next_at <= now:
            due.append(self.next_at)
            self.next_at = self._advance()
        return due
