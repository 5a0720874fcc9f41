"""Wall-clock and process CPU time of a benchmark's timed part.

CPU time is the figure that survives a shared machine: wall time stretches when other
processes take the cores, the CPU the worker spends per task hardly does. Process CPU
(``time.process_time``) counts every thread of this process and nothing of the broker's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Stopwatch", "Timing"]


@dataclass(frozen=True)
class Timing:
    """How long a timed part took: wall seconds and CPU seconds of this process."""

    seconds: float
    cpu_seconds: float

    def cpu_us_per_task(self, tasks: int) -> float:
        """Process CPU microseconds per task."""
        return self.cpu_seconds / tasks * 1e6


class Stopwatch:
    """Started when made; ``stop()`` gives the wall and CPU time since."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)
