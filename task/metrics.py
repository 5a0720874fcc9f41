"""Prometheus metrics for the Launcher and the apps, read from their counters at scrape time.

Counting stays in plain Python attributes the hot path already keeps; a scrape turns them
into Prometheus families (``task.metrics_prometheus``). So a worker without ``/metrics``
pays nothing for it, and prometheus-client is imported only when metrics are asked for:
without the ``[metrics]`` extra ``/metrics`` answers 404 and the app says once how to get it.

The one thing the Launcher records for metrics alone is task durations per type and
result (``TaskDurations``): a histogram cannot be rebuilt from a running mean.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from task.launcher import Launcher

__all__ = [
    "BUCKETS",
    "INSTALL_HINT",
    "OVERFLOW_TYPE",
    "TaskDurations",
    "flatten_numbers",
    "launcher_metrics",
    "metrics_installed",
    "stats_metrics",
]

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the task duration histogram: from a few ms to an hour,
#: since tasks range from a no-op to a nightly copy.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
#: Task types beyond ``TaskDurations.max_types`` are counted under this type, so a bus
#: full of made-up types cannot grow the metrics without bound.
OVERFLOW_TYPE = "_other"


@dataclass(slots=True)
class _Series:
    """One histogram series: a count per bucket (the last is +Inf) and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0


class TaskDurations:
    """Durations of finished tasks per (type, result): cheap to record, read at scrape."""

    def __init__(self, max_types: int = 100) -> None:
        self.max_types = max_types
        self._series: dict[tuple[str, str], _Series] = {}
        self._types: set[str] = set()
        #: the last task's type, result and series (None before the first): a worker's tasks
        #: are mostly alike, and two comparisons cost less than a tuple and a look-up
        self._last: tuple[str | None, str | None, _Series] = (None, None, _Series())

    def observe(self, task_type: str, result: str, seconds: float) -> None:
        """Record one finished task; on the hot path, two comparisons and a bisect."""
        last_type, last_result, series = self._last
        if task_type != last_type or result != last_result:
            found = self._series.get((task_type, result))
            series = found if found is not None else self._new_series(task_type, result)
            self._last = (task_type, result, series)
        series.counts[bisect_left(BUCKETS, seconds)] += 1
        series.total += seconds

    def _new_series(self, task_type: str, result: str) -> _Series:
        if task_type not in self._types:
            if len(self._types) >= self.max_types:
                task_type = OVERFLOW_TYPE
            self._types.add(task_type)
        return self._series.setdefault((task_type, result), _Series())

    def by_result(self) -> dict[str, int]:
        """Tasks finished per result, over every type: ``/stats``'s ``results``, read from the
        histogram so the hot path counts each task once."""
        counts: dict[str, int] = {}
        for (_, result), series in list(self._series.items()):
            counts[result] = counts.get(result, 0) + sum(series.counts)
        return counts

    def total_seconds(self) -> float:
        """Seconds spent in every task recorded."""
        return sum(series.total for series in list(self._series.values()))

    def snapshot(self) -> Iterator[tuple[str, str, list[int], float]]:
        """(type, result, cumulative counts per bucket ending with +Inf, sum of seconds)."""
        for (task_type, result), series in list(self._series.items()):
            cumulative, running = [], 0
            for count in series.counts:
                running += count
                cumulative.append(running)
            yield task_type, result, cumulative, series.total


_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_]+")


def flatten_numbers(stats: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, float]]:
    """The numbers of a ``stats()`` dict as (metric_name, value); nested keys joined by ``_``.

    Strings, lists and None are left out: they are labels or names, not measurements.
    Booleans become 0/1.
    """
    for key, value in stats.items():
        name = _NOT_A_NAME.sub("_", f"{prefix}_{key}" if prefix else str(key)).strip("_").lower()
        if isinstance(value, int | float):  # bool is an int: True -> 1.0
            yield name, float(value)
        elif isinstance(value, Mapping):
            yield from flatten_numbers(value, name)


#: What enables ``/metrics``; said in the log and in the 404 answer.
INSTALL_HINT = "pip install 'taskbus[metrics]'"


def metrics_installed() -> bool:
    """Whether prometheus-client is there to be imported (without importing it)."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


@functools.cache
def _say_metrics_missing() -> None:
    logger.info("/metrics is off: Prometheus metrics need %s", INSTALL_HINT)


def _available() -> bool:
    """Whether prometheus-client can be imported; says once how to get it when not."""
    try:
        import prometheus_client  # noqa: F401
    except ModuleNotFoundError:
        _say_metrics_missing()
        return False
    return True


def launcher_metrics(launcher: Launcher) -> Callable[[], bytes] | None:
    """What ``StatusServer(metrics=...)`` serves for a Launcher; None without the extra.

    Each call builds its own registry, so several launchers in one process never clash.
    """
    if not _available():
        return None
    from task.metrics_prometheus import exposition, launcher_registry

    return exposition(launcher_registry(launcher))


def stats_metrics(app: str, stats: Callable[[], Mapping[str, object]]) -> Callable[[], bytes] | None:
    """Every number of an app's ``stats()`` as a gauge ``taskbus_<app>_<key>``; None
    without the extra."""
    if not _available():
        return None
    from task.metrics_prometheus import exposition, stats_registry

    return exposition(stats_registry(app, stats))
