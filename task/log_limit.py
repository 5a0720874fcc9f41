"""A warning that repeats for every message of a flood is logged at most once a minute.

A worker fed a topic full of tasks of another type would otherwise write one line per task;
the first is logged at once, later ones are counted and summed up in the next line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs the first call at once, then at most one line per ``every`` seconds carrying the
    number of calls left unlogged since the last line."""

    def __init__(
        self, logger: logging.Logger, level: int = logging.WARNING, every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.every = every
        self.clock = clock
        #: the clock reading before which lines are held back: a caller on a hot path that
        #: reads the same clock anyway compares with it and counts with ``hold_back()``
        self.quiet_until = float("-inf")
        self._suppressed = 0

    def hold_back(self) -> None:
        """Count a call held back without making it (its caller saw ``quiet_until`` ahead)."""
        self._suppressed += 1

    def __call__(self, msg: str, *args: object) -> None:
        """Log ``msg % args`` unless a line went out less than ``every`` seconds ago."""
        now = self.clock()
        if now < self.quiet_until:
            self.hold_back()
            return
        if self._suppressed:
            msg += " (and %d more like it since the last report)"
            args = (*args, self._suppressed)
        self.quiet_until = now + self.every
        self._suppressed = 0
        self.logger.log(self.level, msg, *args)
