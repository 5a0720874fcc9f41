"""``/healthz`` tells the truth and ``/readyz`` says when a worker has started (issue 18).

A Kubernetes probe acts on these answers: 503 with the reason while the bus connection is
down or the ledger has failed every write past ``ledger_unhealthy_after``; ``/readyz`` 503
until the consumer has subscribed. Before this, ``/healthz`` answered 200 whatever happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from task import Task, Worker, completed
from task.backlog import BacklogReader
from task.bus.base import ReportsHealth, consumer_health
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.bus.registry import open_consumer
from task.credentials import Credentials
from task.errors import BusError, ConfigError, LedgerError
from task.health import LEDGER_UNHEALTHY_AFTER, judge
from task.inspect.base import Inspector, TopicStats
from task.launcher import Launcher, LauncherOptions
from task.ledger.memory import MemoryLedger
from task.status import StatusServer, backlog_metrics
from tests.servers.nats import NatsServer, NatsServerFactory
from tests.servers.tansu import Tansu

#: a time far from now, so nothing here depends on the real clock's value
T0 = 1_000_000.0


async def get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` of the status server on ``port``: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Await ``check()`` (a coroutine function or a plain one) until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        await asyncio.sleep(0.02)
    pytest.fail(f"never saw {what} within {timeout:g}s")


class Quick(Worker):
    task_type = "quick"

    def __init__(self, info: str) -> None:
        self.info = info

    async def do_task(self, ctx: Any) -> tuple[str, str]:
        return completed("done")


# ------------------------------------------------------------------ the consumers


@pytest.mark.parametrize("url", [
    "memory:health", "file:{tmp}/", "nats://127.0.0.1:1", "jetstream://127.0.0.1:1",
    "kafka://127.0.0.1:1", "nsq://127.0.0.1:1",
])
def test_every_bundled_consumer_reports_its_connection(url: str, tmp_path: Path) -> None:
    consumer = open_consumer(url.format(tmp=tmp_path), topic="t", channel="c")
    assert isinstance(consumer, ReportsHealth)
    # not started is not broken: a worker still connecting is healthy, only not ready
    started, problem = consumer_health(consumer)
    assert problem is None
    assert started is url.startswith("memory:")  # a memory consumer has nothing to start


def test_a_consumer_without_the_capability_counts_as_started_and_healthy() -> None:
    assert consumer_health(object()) == (True, None)


def test_an_nsq_consumer_with_no_nsqd_left_says_so() -> None:
    consumer: Any = open_consumer("nsq://127.0.0.1:1", topic="t", channel="c")
    consumer._started = True  # started, and every connection since lost (none reconnected)
    assert consumer_health(consumer) == (True, "no nsqd connected for t/c; reconnecting")


def test_a_kafka_consumer_that_failed_for_good_says_why() -> None:
    consumer: Any = open_consumer("kafka://127.0.0.1:1", topic="t", channel="c")
    consumer._failure = BusError("Kafka consumer of 't' failed: fatal")
    assert consumer.health() == "Kafka consumer of 't' failed: fatal"


@pytest.mark.kafka
@pytest.mark.faults
async def test_a_kafka_consumer_reports_the_broker_gone_and_back() -> None:
    # Given a consumer of a broker of its own (aiokafka retries silently: nothing raises)
    broker = Tansu()
    broker.start()
    consumer = open_consumer(broker.url, topic="health", channel="health")
    try:
        await consumer.start()
        assert consumer_health(consumer) == (True, None)  # just started: no connection yet is fine
        # When the broker is killed, then comes back
        await asyncio.to_thread(_kill, broker)
        assert await until(lambda: consumer_health(consumer)[1], "the outage") == (
            "no Kafka broker answers for 'health'; reconnecting")
        await asyncio.to_thread(broker.start)
        await until(lambda: consumer_health(consumer) == (True, None), "the broker back")
    finally:
        # the restarted broker forgot the group (memory storage), so leaving it would wait out
        # a timeout: the broker goes first, the consumer then stops at once
        if broker.process is not None:
            _kill(broker)
        await consumer.stop()


def _kill(broker: Tansu) -> None:
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait()
    broker.process = None


# ------------------------------------------------------------------ the verdict


def test_the_ledger_makes_a_worker_unhealthy_only_past_the_threshold() -> None:
    stats = {"health": {"bus_started": True, "bus_problem": None, "ledger_failing_since": T0,
                        "ledger_error": "database is locked"}}
    just_before = judge(stats, now=T0 + 59.9, ledger_unhealthy_after=60)
    at_limit = judge(stats, now=T0 + 60, ledger_unhealthy_after=60)
    assert just_before.healthy and just_before.healthz() == "ok"
    assert not at_limit.healthy and not at_limit.ready
    assert at_limit.healthz() == "ledger: every write has failed for 60s (limit 60s): database is locked"


def test_an_app_whose_stats_say_nothing_about_health_stays_healthy() -> None:
    verdict = judge({"tasks": 3}, now=T0, ledger_unhealthy_after=LEDGER_UNHEALTHY_AFTER)
    assert verdict.healthy and verdict.ready


# ------------------------------------------------------------------ the endpoints


@pytest.fixture
async def status_of() -> AsyncIterator[Callable[..., Any]]:
    """Factory: a started StatusServer on a free port; stopped after the test."""
    servers: list[StatusServer] = []

    async def make(stats: Callable[[], Any], **kwargs: Any) -> StatusServer:
        server = StatusServer(stats, port=0, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.mark.nats
@pytest.mark.faults
async def test_readyz_waits_for_the_subscription_and_healthz_fails_while_nats_is_down(
    nats_servers: NatsServerFactory, status_of: Callable[..., Any],
) -> None:
    # Given a worker on a core NATS server that reconnects quickly, not yet running
    server: NatsServer = nats_servers()
    consumer = open_consumer(f"{server.url}?reconnect_wait=100ms", topic="quick", channel="quick")
    launcher = Launcher(Quick, consumer, MemoryProducer(MemoryBroker()), LauncherOptions(task_type="quick"))
    status = await status_of(launcher.stats, name="worker")
    # Then before it subscribed: alive, not ready
    assert await get(status.port, "/healthz") == (200, "starting\n")
    assert await get(status.port, "/readyz") == (503, "starting: the bus consumer has not subscribed yet\n")
    running = asyncio.create_task(launcher.run())
    try:
        # When it runs: healthy and ready
        await until(lambda: _is(status.port, "/readyz", 200), "ready")
        assert await get(status.port, "/healthz") == (200, "ok\n")
        # When the server goes away: both answer 503 and say why
        server.stop()
        down = f"bus: connection to {server.url}?reconnect_wait=100ms down, reconnecting\n"
        await until(lambda: _is(status.port, "/healthz", 503), "/healthz 503")
        assert await get(status.port, "/healthz") == (503, down)
        assert await get(status.port, "/readyz") == (503, down)
        # When it is back: 200 again, without a restart of the worker
        server.start()
        await until(lambda: _is(status.port, "/healthz", 200), "/healthz 200 again")
        assert await get(status.port, "/readyz") == (200, "ready\n")
    finally:
        await launcher.stop()
        await running


async def _is(port: int, path: str, code: int) -> bool:
    return (await get(port, path))[0] == code


class FlakyLedger(MemoryLedger):
    """A memory ledger whose writes fail while ``down``."""

    down = False

    async def started(self, task: Task, task_list: str | None = None) -> None:
        if self.down:
            raise LedgerError("ledger unreachable: connection refused")
        await super().started(task, task_list)

    async def done(self, task_list: str, id: str) -> None:
        if self.down:
            raise LedgerError("ledger unreachable: connection refused")
        await super().done(task_list, id)


async def test_healthz_fails_once_every_ledger_write_failed_for_the_threshold_and_recovers(
    status_of: Callable[..., Any],
) -> None:
    # Given a worker whose ledger is down, and a status server whose clock the test sets
    broker, ledger = MemoryBroker(), FlakyLedger()
    ledger.down = True
    launcher = Launcher(Quick, MemoryConsumer(broker, "quick"), MemoryProducer(broker),
                        LauncherOptions(task_type="quick"), ledger=ledger)
    now = [T0]
    status = await status_of(launcher.stats, name="worker", clock=lambda: now[0], ledger_unhealthy_after=60)
    broker.publish("quick", Task.new("quick", "a", id="a").to_json())
    running = asyncio.create_task(launcher.run())
    try:
        # When its first write (started) fails
        since = await until(lambda: _ledger(launcher.stats()).get("ledger_failing_since"), "a failed write")
        # Then it stays healthy up to the threshold, and fails from there, saying why
        now[0] = since + 59
        assert await get(status.port, "/healthz") == (200, "ok\n")
        now[0] = since + 61
        assert await get(status.port, "/healthz") == (
            503, "ledger: every write has failed for 61s (limit 60s): ledger unreachable: connection refused\n")
        assert (await get(status.port, "/readyz"))[0] == 503
        # When the ledger is back, the next retried write succeeds: healthy again
        ledger.down = False
        await until(lambda: _ledger(launcher.stats()).get("ledger_failing_since") is None, "the write retried")
        assert await get(status.port, "/healthz") == (200, "ok\n")
        assert _pending_writes(launcher) == 0  # the failed write was retried, not dropped
    finally:
        await launcher.stop()
        await running


def _pending_writes(launcher: Launcher) -> object:
    ledger = launcher.stats()["ledger"]
    assert isinstance(ledger, dict)
    return ledger["pending_writes"]


def _ledger(stats: dict[str, object]) -> dict[str, Any]:
    health = stats["health"]
    assert isinstance(health, dict)
    return health


async def test_an_apps_own_healthy_check_still_counts(status_of: Callable[..., Any]) -> None:
    status = await status_of(dict, healthy=lambda: False)
    assert await get(status.port, "/healthz") == (503, "the app reports itself unhealthy\n")


# ------------------------------------------------------------------ the backlog


class CountingInspector:
    """An inspector whose answer the test sets; counts the reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.waiting = 3
        self.fails: Exception | None = None

    def __call__(self, url: str, credentials: Credentials | None) -> Inspector:
        return self  # type: ignore[return-value]

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        self.reads += 1
        if self.fails is not None:
            raise self.fails
        return TopicStats(topic, channel, waiting=self.waiting, in_flight=1)

    async def close(self) -> None:
        pass


async def test_the_backlog_is_read_when_looked_at_and_cached_for_a_while() -> None:
    inspector, now = CountingInspector(), [T0]
    reader = BacklogReader("file:x/", "slow", "slow", every=10, clock=lambda: now[0], inspector=inspector)
    assert reader.latest() is None  # the first look starts the first read
    reading = await reader.refresh()
    assert reading is not None and reading["waiting"] == 3 and reading["age_s"] == 0
    inspector.waiting = 7
    now[0] += 9
    assert (reader.latest() or {})["waiting"] == 3 and inspector.reads == 1  # cached
    now[0] += 1
    assert (await reader.refresh() or {})["waiting"] == 7 and inspector.reads == 2


async def test_a_failed_backlog_read_says_why_and_an_impossible_one_is_not_retried() -> None:
    inspector, now = CountingInspector(), [T0]
    reader = BacklogReader("jetstream://x", "t", "c", every=1, clock=lambda: now[0], inspector=inspector)
    inspector.fails = BusError("cannot reach jetstream://x")
    assert await reader.refresh() == {"error": "cannot read the backlog: cannot reach jetstream://x", "age_s": 0}
    inspector.fails = ConfigError("cannot inspect the 'nop' bus")
    now[0] += 1
    impossible = await reader.refresh() or {}  # not an error: nothing to count, said once
    assert (impossible["waiting"], impossible["notes"]) == (None, ["cannot inspect the 'nop' bus"])
    now[0] += 5
    reader.latest()
    assert inspector.reads == 2


def test_the_backlog_goes_on_metrics_as_gauges_without_unknown_counts() -> None:
    text = backlog_metrics({"topic": "slow", "channel": 'a"b', "waiting": 4, "in_flight": None,
                            "redelivered": 0, "oldest_age_seconds": 12.5}).decode()
    assert 'taskbus_backlog_waiting{topic="slow",channel="a\\"b"} 4\n' in text
    assert "taskbus_backlog_redelivered" in text and "taskbus_backlog_oldest_age_seconds" in text
    assert "in_flight" not in text
    assert backlog_metrics({"error": "down"}) == b"" and backlog_metrics(None) == b""


async def test_metrics_carry_the_backlog_beside_the_apps_own(status_of: Callable[..., Any]) -> None:
    stats = {"backlog": {"topic": "slow", "channel": "slow", "waiting": 2}}
    status = await status_of(lambda: stats, metrics=lambda: b"taskbus_tasks_finished 5\n")
    code, body = await get(status.port, "/metrics")
    assert code == 200
    assert body.startswith("taskbus_tasks_finished 5\n")
    assert 'taskbus_backlog_waiting{topic="slow",channel="slow"} 2' in body
