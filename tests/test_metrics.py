"""Prometheus metrics: a Launcher's and an app's numbers on /metrics, per-launcher registries,
and a plain 404 (said once in the log) without prometheus-client."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from task import Task, Worker, completed, failed
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.launcher import Launcher, LauncherOptions
from task.ledger.memory import MemoryLedger
from task.metrics import BUCKETS, OVERFLOW_TYPE, TaskDurations, launcher_metrics, stats_metrics
from task.status import StatusServer
from task.worker import TaskContext


class Odd(Worker):
    """Completes even infos, fails odd ones: two results to count apart."""

    task_type = "odd"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        return completed() if int(self.info) % 2 == 0 else failed("odd %s", self.info)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def drained_launcher(broker: MemoryBroker, tasks: int, ledger: MemoryLedger | None = None) -> Launcher:
    for i in range(tasks):
        broker.publish("odd", Task.new("odd", str(i)).to_json())
    broker.publish("odd", b"not json")
    broker.publish("odd", Task.new("odd", "0").to_json(), attempt=2)
    broker.close_topic("odd")
    options = LauncherOptions(task_type="odd", topic="odd", max_in_progress=3, dead_letter_topic="dead")
    launcher = Launcher(Odd, MemoryConsumer(broker, "odd", prefetch=3), MemoryProducer(broker), options, ledger)
    await asyncio.wait_for(launcher.run(), 30)
    return launcher


async def get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_a_launchers_counters_durations_and_ledger_are_on_metrics() -> None:
    # Given a launcher that ran 5 tasks (3 complete, 2 error), one invalid message and one
    # redelivered task, with a ledger
    launcher = await drained_launcher(MemoryBroker(), 5, MemoryLedger())
    metrics = launcher_metrics(launcher)
    assert metrics is not None
    # When /metrics is scraped
    async with StatusServer(launcher.stats, port=0, metrics=metrics) as server:
        status, body = await get(server.port, "/metrics")
    # Then it shows tasks by type and result, a histogram, and every failure counter
    assert status == 200
    got = samples(body)
    assert got[("taskbus_tasks_total", (("result", "complete"), ("type", "odd")))] == 4
    assert got[("taskbus_tasks_total", (("result", "error"), ("type", "odd")))] == 2
    labels = (("result", "error"), ("type", "odd"))
    assert got[("taskbus_task_duration_seconds_count", labels)] == 2
    assert got[("taskbus_task_duration_seconds_bucket", (("le", "+Inf"), *labels))] == 2
    assert got[("taskbus_task_duration_seconds_bucket", (("le", "3600.0"), *labels))] == 2
    assert got[("taskbus_invalid_messages_total", ())] == 1
    assert got[("taskbus_dead_lettered_total", ())] == 1
    assert got[("taskbus_redeliveries_total", ())] == 1
    assert got[("taskbus_messages_consumed_total", ())] == 7
    assert got[("taskbus_tasks_in_flight", ())] == 0
    assert got[("taskbus_send_failures_total", ())] == 0
    assert got[("taskbus_handler_errors_total", ())] == 0
    assert got[("taskbus_tasks_wrong_type_total", ())] == 0
    assert ("taskbus_ledger_pending_writes", ()) in got
    assert got[("taskbus_ledger_failures_total", ())] == 0
    assert got[("taskbus_consumer_received", ())] == 7
    assert ("process_resident_memory_bytes", ()) in got or sys.platform != "linux"


async def test_two_launchers_in_one_process_have_their_own_metrics() -> None:
    first = await drained_launcher(MemoryBroker(), 2)
    second = await drained_launcher(MemoryBroker(), 6)
    one, two = launcher_metrics(first), launcher_metrics(second)
    assert one is not None and two is not None
    key = ("taskbus_tasks_total", (("result", "complete"), ("type", "odd")))
    assert (samples(one())[key], samples(two())[key]) == (2, 4)


def test_an_apps_stats_numbers_become_gauges_and_text_is_left_out() -> None:
    stats = {"app": "retry", "runtime_s": 1.5, "retried": 3, "memory_only": True,
             "producer": {"bus": "nats", "url": "nats://h:4222", "sent": 7}, "rules": [{"n": 1}]}
    metrics = stats_metrics("retry", lambda: stats)
    assert metrics is not None
    got = samples(metrics())
    assert got[("taskbus_retry_retried", ())] == 3
    assert got[("taskbus_retry_runtime_s", ())] == 1.5
    assert got[("taskbus_retry_memory_only", ())] == 1
    assert got[("taskbus_retry_producer_sent", ())] == 7
    assert not [name for name, _ in got if "url" in name or "rules" in name or name.endswith("_app")]
    stats["retried"] = 4  # read at scrape time, not copied
    assert samples(metrics())[("taskbus_retry_retried", ())] == 4


def test_durations_fall_in_the_bucket_whose_bound_they_do_not_exceed() -> None:
    durations = TaskDurations()
    durations.observe("t", "complete", BUCKETS[0])
    durations.observe("t", "complete", BUCKETS[-1] + 1)
    [(task_type, result, cumulative, total)] = list(durations.snapshot())
    assert (task_type, result, cumulative[0], cumulative[-2], cumulative[-1]) == ("t", "complete", 1, 1, 2)
    assert total == pytest.approx(BUCKETS[0] + BUCKETS[-1] + 1)


def test_tasks_of_alternating_types_and_results_each_count_in_their_own_series() -> None:
    durations = TaskDurations()
    for task_type, result in [("a", "complete"), ("a", "complete"), ("b", "complete"), ("a", "error"),
                              ("a", "complete"), ("b", "complete")]:
        durations.observe(task_type, result, 0.001)
    counts = {(task_type, result): cumulative[-1] for task_type, result, cumulative, _ in durations.snapshot()}
    assert counts == {("a", "complete"): 3, ("b", "complete"): 2, ("a", "error"): 1}
    assert durations.by_result() == {"complete": 5, "error": 1}


def test_made_up_task_types_beyond_the_limit_are_folded_into_one() -> None:
    durations = TaskDurations(max_types=3)
    for i in range(10):
        durations.observe(f"type-{i}", "complete", 0.001)
    types = {task_type for task_type, *_ in durations.snapshot()}
    assert types == {"type-0", "type-1", "type-2", OVERFLOW_TYPE}
    assert sum(c[-1] for t, _, c, _ in durations.snapshot() if t == OVERFLOW_TYPE) == 7


async def test_without_prometheus_client_metrics_answer_404_and_the_log_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import task.metrics

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import now fails
    task.metrics._say_metrics_missing.cache_clear()
    caplog.set_level(logging.INFO, logger="task.metrics")
    makers: list[Callable[[], bytes] | None] = [stats_metrics("cron", dict), stats_metrics("retry", dict)]
    assert makers == [None, None]
    assert [r.getMessage() for r in caplog.records].count(
        "/metrics is off: Prometheus metrics need pip install 'taskbus[metrics]'") == 1
    server = StatusServer.for_app("cron", dict, host="127.0.0.1", port=0)
    assert server is None  # port 0 is "off" for an app
    async with StatusServer(dict, metrics=makers[0]) as plain:
        status, body = await get(plain.port, "/metrics")
        assert (await get(plain.port, "/healthz"))[0] == 200
    task.metrics._say_metrics_missing.cache_clear()
    # and the scraper's operator reads, in the answer itself, what to install: a 404, not a 500
    assert status == 404
    assert body == b"/metrics needs prometheus-client: pip install 'taskbus[metrics]'\n"


async def test_an_app_without_metrics_answers_404_and_names_what_is_there() -> None:
    # prometheus-client is installed here; an app that registers no metrics says so plainly
    async with StatusServer(dict) as plain:
        status, body = await get(plain.port, "/metrics")
    assert status == 404 and b"pip install" not in body and b"/stats" in body
