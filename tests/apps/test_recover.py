"""``taskbus recover``: lost tasks resent once per claim, given up after max_attempts.

Time is an injected clock shared by the ledger and the app; passes are run by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.apps.recover import RecoverApp, RecoverSettings
from task.bus.memory import Fault, MemoryBroker, MemoryProducer
from task.bus.registry import open_consumer, open_producer
from task.cli import run_command
from task.errors import ConfigError
from task.ledger.base import Ledger, ScheduleKind
from task.ledger.memory import LedgerFault, MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.settings import load_settings
from task.task import Task
from tests.ledger.contract import Clock
from tests.servers.nats import NatsServer
from tests.servers.ports import free_port


def make_app(ledger: Ledger, broker: MemoryBroker, clock: Clock, **options: object) -> RecoverApp:
    defaults: dict[str, object] = {"older_than": 60, "max_attempts": 3, "owner": "r1"}
    return RecoverApp(ledger=ledger, producer=MemoryProducer(broker), clock=clock,
                      **{**defaults, **options})  # type: ignore[arg-type]


def sent(broker: MemoryBroker, topic: str) -> list[Task]:
    return [Task.from_json(body) for body in broker.bodies(topic)]


async def test_a_lost_task_is_resent_and_a_touched_one_is_not() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    # Given a task whose worker died and one still running with a heartbeat
    lost, running = Task.new("fetch", "lost"), Task.new("fetch", "running")
    lost.start()
    await ledger.started(lost)
    await ledger.started(running)
    clock.advance(50)
    await ledger.touch("fetch", running.id)
    clock.advance(20)
    # When recover makes a pass
    app = make_app(ledger, broker, clock)
    assert await app.run_pass() is True
    # Then only the lost task went back to its type's topic, clean of its start
    assert [(t.id, t.started) for t in sent(broker, "fetch")] == [(lost.id, "")]
    record = await ledger.find("fetch", lost.id)
    assert record is not None and (record.attempts, record.owner) == (1, "r1")
    # and a second pass right away resends nothing
    await app.run_pass()
    assert len(broker.bodies("fetch")) == 1
    assert app.counts["resent"] == 1


async def test_a_created_task_behind_a_backlog_is_not_resent_before_created_older_than() -> None:
    # Given a task sent but queued behind a long backlog (created, never started), and one
    # whose worker died (started), with recover's defaults: 5m for started, 6h for created
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    queued, lost = Task.new("fetch", "queued", id="queued"), Task.new("fetch", "lost", id="lost")
    await ledger.created(queued)
    await ledger.started(lost)
    app = make_app(ledger, broker, clock, older_than=300, created_older_than=6 * 3600)
    # When recover passes every 5 minutes for almost 6 hours
    for _ in range(71):
        clock.advance(300)
        await app.run_pass()
    # Then the started task was resent and given up on, the queued one neither
    assert [t.id for t in sent(broker, "fetch")] == ["lost"] * 3
    assert [t.id for t in sent(broker, "done")] == ["lost"]
    assert app.counts["queued"] > 0
    record = await ledger.find("fetch", "queued")
    assert record is not None and record.attempts == 0
    # And once it has waited 6 hours it is presumed lost and resent
    clock.advance(300)
    await app.run_pass()
    assert [t.id for t in sent(broker, "fetch")] == ["lost"] * 3 + ["queued"]


def test_created_older_than_is_a_setting_with_hours_by_default() -> None:
    assert load_settings(RecoverSettings).created_older_than == 6 * 3600
    settings = load_settings(RecoverSettings, created_older_than="2h", ledger="memory:")
    app = RecoverApp.from_settings(settings)
    assert (app.created_older_than, app.older_than) == (7200, 300)
    with pytest.raises(ConfigError, match="created_older_than"):
        load_settings(RecoverSettings, created_older_than="0")


async def test_two_replicas_never_send_one_task_twice(tmp_path: Path) -> None:
    # Given 30 lost tasks in one SQLite file and two recover replicas, each with its own connection
    clock, broker = Clock(), MemoryBroker()
    path = str(tmp_path / "ledger.db")
    async with SqliteLedger(path, clock=clock) as setup:
        for i in range(30):
            await setup.started(Task.new("fetch", str(i), id=f"t{i}"))
    clock.advance(120)
    apps = [make_app(SqliteLedger(path, clock=clock), broker, clock, owner=f"r{n}") for n in (1, 2)]
    try:
        # When both pass at the same time
        await asyncio.gather(*(app.run_pass() for app in apps))
    finally:
        for app in apps:
            await app.ledger.close()
    # Then every task was sent exactly once, shared between them
    assert sorted(t.id for t in sent(broker, "fetch")) == sorted(f"t{i}" for i in range(30))
    assert sum(app.counts["resent"] for app in apps) == 30
    for app in apps:
        assert app.counts["seen"] == app.counts["resent"] + app.counts["claimed_elsewhere"]


async def test_max_attempts_then_a_done_error_task_and_the_record_closed() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    task = Task.new("fetch", "never finishes")
    await ledger.started(task)
    app = make_app(ledger, broker, clock, max_attempts=2, topic="fetch-q", done_topic="finished")
    # Given a task lost again after each of two resends
    for _ in range(2):
        clock.advance(61)
        await app.run_pass()
    assert len(broker.bodies("fetch-q")) == 2
    # When it is lost a third time
    clock.advance(61)
    await app.run_pass()
    # Then no third resend: a done task with error goes to the done topic, the record closes
    assert len(broker.bodies("fetch-q")) == 2
    [done] = sent(broker, "finished")
    assert (done.id, done.result, done.msg) == (task.id, "error", "gave up after 2 attempts")
    assert done.ended
    assert await ledger.find("fetch", task.id) is None
    assert app.counts["gave_up"] == 1


async def test_due_scheduled_tasks_are_released() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    task = Task.new("fetch", "later")
    await ledger.schedule(task, None, clock.at(30), topic="fetch", kind=ScheduleKind.RETRY)
    app = make_app(ledger, broker, clock, task_lists=["fetch"])
    await app.run_pass()
    assert broker.bodies("fetch") == []
    clock.advance(31)
    await app.run_pass()
    assert [t.id for t in sent(broker, "fetch")] == [task.id]
    assert app.counts["released"] == 1
    assert await ledger.find("fetch", task.id) is not None  # outstanding until a worker is done


async def test_a_failed_send_is_retried_on_a_later_pass() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    await ledger.started(Task.new("fetch", "x", id="a"))
    clock.advance(61)
    broker.inject(Fault.SEND_FAILS)
    app = make_app(ledger, broker, clock)
    assert await app.run_pass() is False
    assert app.counts["send_errors"] == 1 and broker.bodies("fetch") == []
    clock.advance(61)
    assert await app.run_pass() is True
    assert [t.id for t in sent(broker, "fetch")] == ["a"]


async def test_once_exits_1_when_the_ledger_is_down() -> None:
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    ledger.inject(LedgerFault.UNAVAILABLE)
    app = make_app(ledger, broker, clock, once=True)
    assert await app.run() == 1
    assert app.counts["ledger_errors"] == 1


async def test_run_passes_every_interval_until_stopped() -> None:
    # Given a task whose worker has just died, and recover passing every 30s on a clock the
    # test owns (its sleep moves the clock, and stops the app after the third wait)
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    await ledger.started(Task.new("fetch", "x", id="a"))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)
        if len(waits) == 3:
            await app.stop()

    app = make_app(ledger, broker, clock, interval=30, sleep=sleep)
    # When it runs
    assert await asyncio.wait_for(app.run(), 5) == 0
    # Then it passed at 0s, 30s and 60s, and resent the task once it was idle for 60s
    assert waits == [30, 30, 30] and app.counts["passes"] == 3
    assert [t.id for t in sent(broker, "fetch")] == ["a"]


def test_settings_need_a_ledger_and_read_durations() -> None:
    settings = load_settings(RecoverSettings, older_than="5m", interval="30s", ledger="memory:")
    assert (settings.older_than, settings.interval) == (300, 30)
    plain = load_settings(RecoverSettings, older_than="90", interval=2, ledger="memory:")
    assert (plain.older_than, plain.interval) == (90, 2)
    with pytest.raises(ConfigError, match="'soon' is not a duration"):
        load_settings(RecoverSettings, older_than="soon", ledger="memory:")
    with pytest.raises(ConfigError, match="needs a ledger"):
        RecoverApp.from_settings(load_settings(RecoverSettings))


def test_cli_once_resends_from_a_sqlite_ledger_to_the_file_bus(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"

    async def record() -> None:
        async with SqliteLedger(str(db), clock=lambda: 0.0) as ledger:
            await ledger.created(Task.new("fetch", "lost", id="a"))

    asyncio.run(record())
    status = run_command(["recover", "--once", "--ledger", f"sqlite:{db}",
                          "--bus", f"file:{tmp_path}/bus/", "--older-than", "1m"])
    assert status == 0
    lines = (tmp_path / "bus" / "fetch.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a"]


# ------------------------------------------------------------------ end to end on core NATS

_WORKER = str(Path(__file__).with_name("e2e_worker.py"))


async def _worker(nats_url: str, task_type: str, ledger_url: str, cap: float) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, _WORKER, nats_url, task_type, ledger_url, str(cap),
        stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"ready\n", "the worker process did not start"
    return proc


async def _taskbus(*argv: str) -> int:
    """``taskbus ARGV`` in its own process, as a user runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "task.cli", *argv, cwd=Path(__file__).parents[2])
    return await asyncio.wait_for(proc.wait(), 60)


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.nats
@pytest.mark.faults
async def test_a_task_lost_with_its_worker_is_recovered_on_core_nats(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url, ledger_url = nats_server.url, f"sqlite:{tmp_path}/ledger.db"
    suffix = uuid.uuid4().hex[:8]
    lost_type, slow_type = f"e2e-lost-{suffix}", f"e2e-slow-{suffix}"
    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    workers = [await _worker(url, lost_type, ledger_url, 1000),
               await _worker(url, slow_type, ledger_url, 1000)]
    done_tasks = open_consumer(url, topic="done", channel=f"e2e-{suffix}")
    try:
        await done_tasks.start()

        async def state(task_type: str, id: str) -> str:
            record = await ledger.find(task_type, id)
            return str(record.state) if record else "gone"

        # Given a task in the middle of its work and one that works on, heartbeating
        for task_type, id in ((lost_type, "lost-1"), (slow_type, "slow-1")):
            assert await _taskbus("send", task_type, "1000", "--id", id, "--bus", url,
                                  "--ledger", ledger_url) == 0

        async def both_started() -> bool:
            return {await state(lost_type, "lost-1"), await state(slow_type, "slow-1")} == {"started"}

        await _until(both_started, "both tasks to start")
        # When the first worker is killed: core NATS has no redelivery, the message is gone
        workers[0].kill()
        await workers[0].wait()
        workers[0] = await _worker(url, lost_type, ledger_url, 0)  # a fresh worker, fast now
        # And the slow task's heartbeat has been written since the lost one's last write

        async def idle_times() -> tuple[float, float]:
            lost, slow = await ledger.find(lost_type, "lost-1"), await ledger.find(slow_type, "slow-1")
            assert lost is not None and slow is not None
            return lost.updated_at, slow.updated_at

        async def heartbeat_after_the_kill() -> bool:
            lost_at, slow_at = await idle_times()
            return slow_at > lost_at

        await _until(heartbeat_after_the_kill, "the slow task's next heartbeat")
        # And recover makes one pass, on a clock set so that a second of idling falls
        # between the two: the lost task is idle longer, the slow one not
        lost_at, slow_at = await idle_times()
        now = (lost_at + slow_at) / 2 + 1
        recover = RecoverApp(ledger=SqliteLedger(str(tmp_path / "ledger.db"), clock=lambda: now),
                             producer=open_producer(url), older_than=1, clock=lambda: now,
                             once=True)
        assert await recover.run() == 0
        assert recover.counts["resent"] == 1
        # Then the lost task runs again and ends done
        message = await asyncio.wait_for(done_tasks.msg(), 20)
        assert message is not None
        done = Task.from_json(message.body)
        assert (done.id, done.result) == ("lost-1", "complete")

        async def lost_closed() -> bool:
            return await state(lost_type, "lost-1") == "gone"

        await _until(lost_closed, "the ledger to close the recovered task")
        # and the task still running was not resent
        slow = await ledger.find(slow_type, "slow-1")
        assert slow is not None and slow.state == "started" and slow.attempts == 0
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await done_tasks.stop()
        await ledger.close()


async def test_stats_are_served_when_a_status_port_is_set() -> None:
    clock, broker = Clock(), MemoryBroker()
    app = make_app(MemoryLedger(clock=clock), broker, clock, status_port=free_port())
    async with app:
        await app.run_pass()
        assert app.lifecycle.status is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", app.lifecycle.status.port)
        writer.write(b"GET /stats HTTP/1.1\r\n\r\n")
        body = (await reader.read()).partition(b"\r\n\r\n")[2]
        writer.close()
        await writer.wait_closed()
    stats = json.loads(body)
    assert (stats["app"], stats["passes"], stats["owner"]) == ("recover", 1, "r1")


async def test_once_with_nothing_to_do_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a ledger whose only task is still fresh (recover's default: idle 5m means lost)
    url = f"sqlite:{tmp_path / 'ledger.db'}"
    async with SqliteLedger(str(tmp_path / "ledger.db")) as ledger:
        await ledger.created(Task.new("fetch", "fresh", id="f"))
    app = RecoverApp.from_settings(load_settings(RecoverSettings, ledger=url, once=True,
                                                 bus="memory:recover-nothing"))
    # When `recover --once` runs
    with caplog.at_level(logging.INFO, "task.apps.recover"):
        assert await app.run() == 0
    # Then it says there was nothing to do, and why
    assert f"nothing to recover: no task idle longer than 5m (not started: 6h) in {url}" in caplog.messages
    assert app.counts["resent"] == 0


async def test_start_and_each_resend_and_release_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Given a lost task and a scheduled one that is due
    clock, broker = Clock(), MemoryBroker()
    ledger = MemoryLedger(clock=clock)
    await ledger.started(Task.new("fetch", "lost", id="lost-1"))
    await ledger.schedule(Task.new("fetch", "later", id="later-1"), None,
                          datetime.fromtimestamp(clock() + 10, UTC), topic="fetch", kind=ScheduleKind.DELAY)
    clock.advance(70)
    # When a recover pass runs
    with caplog.at_level(logging.INFO, "task.apps.recover"):
        assert await make_app(ledger, broker, clock, once=True).run() == 0
    # Then the log says how it runs, then one line per task it sent
    start, *rest = caplog.messages
    assert start.startswith("recover starting: bus=memory ledger=MemoryLedger task_lists=all")
    assert "older_than=1m" in start and "interval=1m" in start and "max_attempts=3" in start
    assert "created_older_than=6h" in start
    assert "task later-1 (fetch) scheduled for now: sent to 'fetch'" in rest
    assert "task lost-1 (fetch) idle for 1m10s: resent to 'fetch' (attempt 1 of 3)" in rest
    assert not any("nothing to recover" in line for line in rest)
