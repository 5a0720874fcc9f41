"""Whether a worker can do its work: what ``/healthz`` and ``/readyz`` answer.

The Launcher puts the state of its bus connection and of its ledger writes into ``stats()``
(the ``health`` key, see ``launcher_health``), so the status server, which is given only
``stats()``, judges from the same numbers an operator reads on ``/stats``. Two questions,
as Kubernetes asks them:

- healthy (``/healthz``, the liveness probe): the bus connection is up and the ledger has not
  failed every write for ``ledger_unhealthy_after`` seconds. A worker still starting is
  healthy: restarting it would not make it start sooner.
- ready (``/readyz``): started (the consumer has subscribed) and healthy.

An app whose stats have no ``health`` key (the taskmasters) is always both, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice

from task.bus.base import consumer_health
from task.ledger.recorder import LedgerRecorder
from task.task import Task

__all__ = ["HEALTH_KEY", "IN_FLIGHT_KEY", "LEDGER_UNHEALTHY_AFTER", "Verdict", "in_flight", "judge",
           "launcher_health"]

#: the ``stats()`` key that carries the state ``judge`` reads
HEALTH_KEY = "health"
#: the ``stats()`` key listing the tasks running now
IN_FLIGHT_KEY = "in_flight"
#: seconds the ledger may fail every write before ``/healthz`` fails: long enough for a
#: database restart or failover, short enough that a lost ledger is noticed the same hour
LEDGER_UNHEALTHY_AFTER = 60.0
#: running tasks listed in ``stats()``: the page shows them, ``tasks_running`` counts all
IN_FLIGHT_SHOWN = 100


def launcher_health(consumer: object, recorder: LedgerRecorder | None) -> dict[str, object]:
    """The ``health`` entry of a Launcher's stats: its consumer's connection, and since when
    (``time.time()``) every ledger write has failed, None while they succeed."""
    started, problem = consumer_health(consumer)
    report: dict[str, object] = {"bus_started": started, "bus_problem": problem}
    if recorder is not None:
        report["ledger_failing_since"] = recorder.failing_since
        report["ledger_error"] = recorder.last_error
    return report


def in_flight(tasks: Iterable[Task], limit: int = IN_FLIGHT_SHOWN) -> list[dict[str, str]]:
    """The ``in_flight`` entry of a Launcher's stats: id, type, job and start of each task
    running now (the first ``limit``)."""
    return [{"id": t.id, "type": t.type, "job": t.job, "started": t.started} for t in islice(tasks, limit)]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the probes answer: ``problems`` are one line each, empty when healthy."""

    started: bool
    problems: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def ready(self) -> bool:
        return self.started and not self.problems

    def healthz(self) -> str:
        """The body of ``/healthz``: ``ok``, ``starting`` or the problems, one per line."""
        if self.problems:
            return "\n".join(self.problems)
        return "ok" if self.started else "starting"

    def readyz(self) -> str:
        """The body of ``/readyz``: ``ready``, ``starting: ...`` or the problems."""
        if self.problems:
            return "\n".join(self.problems)
        return "ready" if self.started else "starting: the bus consumer has not subscribed yet"


def judge(stats: Mapping[str, object], *, now: float, ledger_unhealthy_after: float) -> Verdict:
    """The verdict on ``stats`` (a Launcher's, or any app's) at ``now`` (``time.time()``)."""
    report = stats.get(HEALTH_KEY)
    if not isinstance(report, Mapping):
        return Verdict(started=True)
    problems: list[str] = []
    bus = report.get("bus_problem")
    if bus:
        problems.append(f"bus: {bus}")
    since = report.get("ledger_failing_since")
    if isinstance(since, int | float) and now - since >= ledger_unhealthy_after:
        problems.append(
            f"ledger: every write has failed for {now - since:.0f}s (limit {ledger_unhealthy_after:g}s): "
            f"{report.get('ledger_error') or 'unknown error'}"
        )
    return Verdict(started=bool(report.get("bus_started", True)), problems=tuple(problems))
