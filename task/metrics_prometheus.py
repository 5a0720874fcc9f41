"""The prometheus-client side of ``task.metrics``: collectors that read counters at scrape.

Imported only when metrics are asked for (it needs ``taskbus[metrics]``). Each registry is
built for one Launcher or app, never the library's global one, so several launchers in a
process, or a test suite starting many, never register a name twice. Library users who
run a Launcher themselves can add their own metrics to ``launcher_registry(launcher)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from task.metrics import BUCKETS, flatten_numbers

if TYPE_CHECKING:
    from task.launcher import Launcher

__all__ = ["LauncherCollector", "StatsCollector", "exposition", "launcher_registry", "stats_registry"]

#: Launcher ``stats()`` keys exported as counters: (stats key, metric name, help).
_COUNTERS = (
    ("tasks_consumed", "taskbus_messages_consumed", "Messages taken from the bus."),
    ("tasks_invalid", "taskbus_invalid_messages", "Messages that were not tasks."),
    ("tasks_redelivered", "taskbus_redeliveries", "Messages delivered more than once."),
    ("dead_lettered", "taskbus_dead_lettered", "Messages sent to the dead-letter topic."),
    ("tasks_ignored", "taskbus_tasks_ignored", "Tasks of another type acknowledged unrun."),
    ("tasks_rejected", "taskbus_tasks_rejected", "Tasks of another type ended as error unrun."),
    ("send_failures", "taskbus_send_failures", "Done tasks that could not be sent; given back to the bus."),
    ("ack_failures", "taskbus_ack_failures", "Acknowledgements the bus refused."),
    ("tasks_wrong_type", "taskbus_tasks_wrong_type", "Tasks of another type run anyway (neither rejected nor ignored)."),
    ("handler_errors", "taskbus_handler_errors", "Unexpected errors while handling a message (logged with a traceback)."),
)
_LE = [*map(floatToGoString, BUCKETS), "+Inf"]


class LauncherCollector(Collector):
    """A Launcher's counters, durations and bus numbers as Prometheus families."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def collect(self) -> Iterable[Metric]:
        stats = self.launcher.stats()
        tasks = CounterMetricFamily("taskbus_tasks", "Finished tasks by type and result.", labels=["type", "result"])
        durations = HistogramMetricFamily(
            "taskbus_task_duration_seconds", "Time do_task took, by type and result.", labels=["type", "result"]
        )
        for task_type, result, cumulative, total in self.launcher.durations.snapshot():
            tasks.add_metric([task_type, result], cumulative[-1])
            durations.add_metric([task_type, result], list(zip(_LE, map(float, cumulative), strict=True)), total)
        yield tasks
        yield durations
        yield GaugeMetricFamily("taskbus_tasks_in_flight", "Tasks running now.", value=_number(stats, "tasks_running"))
        yield GaugeMetricFamily(
            "taskbus_max_in_progress", "Tasks this launcher runs at once.", value=_number(stats, "max_in_progress")
        )
        for key, name, doc in _COUNTERS:
            yield CounterMetricFamily(name, doc, value=_number(stats, key))
        ledger = stats.get("ledger")
        if isinstance(ledger, Mapping):
            yield GaugeMetricFamily(
                "taskbus_ledger_pending_writes", "Ledger writes queued, not yet applied.",
                value=_number(ledger, "pending_writes"),
            )
            yield CounterMetricFamily("taskbus_ledger_failures", "Failed ledger writes (retried).",
                                      value=_number(ledger, "failures"))
            yield CounterMetricFamily("taskbus_ledger_dropped", "Ledger writes dropped: the queue was full.",
                                      value=_number(ledger, "dropped"))
        for side in ("consumer", "producer"):
            info = stats.get(side)
            if isinstance(info, Mapping):
                yield from _gauges(f"taskbus_{side}", info, f"Number from the {side}'s info().")


class StatsCollector(Collector):
    """Every number of an app's ``stats()`` as a gauge named ``taskbus_<app>_<key>``."""

    def __init__(self, app: str, stats: Callable[[], Mapping[str, object]]) -> None:
        self.app = app
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        yield from _gauges(f"taskbus_{self.app}", self.stats(), f"Number from taskbus {self.app}'s stats.")


def _gauges(prefix: str, stats: Mapping[str, object], doc: str) -> Iterable[Metric]:
    seen: set[str] = set()
    for name, value in flatten_numbers(stats, prefix):
        if name not in seen:  # two keys may flatten to one name; the first wins
            seen.add(name)
            yield GaugeMetricFamily(name, doc, value=value)


def _number(stats: Mapping[str, object], key: str) -> float:
    value = stats.get(key, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def launcher_registry(launcher: Launcher) -> CollectorRegistry:
    """A fresh registry holding ``launcher``'s metrics and this process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LauncherCollector(launcher))
    ProcessCollector(registry=registry)
    return registry


def stats_registry(app: str, stats: Callable[[], Mapping[str, object]]) -> CollectorRegistry:
    """A fresh registry holding an app's ``stats()`` numbers and this process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(app, stats))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> Callable[[], bytes]:
    """The Prometheus text of ``registry``, rendered at each call (each scrape)."""
    return lambda: generate_latest(registry)
