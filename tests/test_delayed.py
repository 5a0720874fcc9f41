"""Delayed tasks on the memory and file buses: held in the ledger, released when due and never
earlier, once across replicas, after a restart; cancel; the CLI's --delay/--at.

Time is an injected clock: the tests move it and call ``release_due`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.bench.delayed import lateness_figures
from task.bus.memory import Fault, MemoryBroker, MemoryProducer
from task.bus.registry import open_producer
from task.credentials import Credentials
from task.delay_release import DelayReleaser
from task.delayed import CancelOutcome, cancel_delayed, due_time, run_at, send_delayed
from task.errors import ConfigError
from task.ledger.base import Ledger, ScheduleKind
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.task import Task

START = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def bodies(broker: MemoryBroker, topic: str = "fetch") -> list[Task]:
    return [Task.from_json(body) for body in broker.bodies(topic)]


def taskbus(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run([sys.executable, "-m", "task.cli", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_due_time_rounds_up_to_the_second_so_it_is_never_early() -> None:
    assert due_time(delay=90, now=START) == START + timedelta(seconds=90)
    assert due_time(delay=0.2, now=START) == START + timedelta(seconds=1)
    assert due_time(at=START + timedelta(microseconds=1)) == START + timedelta(seconds=1)
    later = datetime(2026, 12, 1, 6, 0, 0, tzinfo=UTC).astimezone()  # any zone comes back as UTC
    assert due_time(at=later).tzinfo is UTC
    for bad in ({}, {"at": START, "delay": 1.0}, {"delay": -1.0}, {"at": datetime(2026, 12, 1)}):
        with pytest.raises(ConfigError):
            due_time(**bad)  # type: ignore[arg-type]


async def test_a_delayed_task_waits_in_the_ledger_with_run_at_and_its_topic() -> None:
    broker, ledger = MemoryBroker(), MemoryLedger()
    task = Task.new("fetch", "s3://b/k", meta={"job": "daily"})
    sent = await send_delayed(MemoryProducer(broker), "fetch-high", task, START + timedelta(minutes=15),
                              ledger=ledger)
    assert (sent.how, sent.id, sent.at) == ("ledger", task.id, START + timedelta(minutes=15))
    assert sent.task.get_meta("run_at") == "2026-12-01T05:15:00Z" and sent.task.get_meta("job") == "daily"
    assert run_at(sent.task) == sent.at
    assert task.get_meta("run_at") == ""  # the caller's task is left as it was
    assert broker.bodies("fetch-high") == []
    [entry] = await ledger.scheduled("fetch", 10)
    assert (entry.task, entry.topic, entry.kind) == (sent.task, "fetch-high", ScheduleKind.DELAY)


async def test_a_bus_without_native_delay_and_no_ledger_is_one_clear_config_error() -> None:
    broker = MemoryBroker()
    with pytest.raises(ConfigError) as caught:
        await send_delayed(MemoryProducer(broker), "fetch", Task.new("fetch", "x"), START, ledger=None)
    message = str(caught.value)
    assert "memory bus cannot delay" in message and "--ledger" in message and "nsq, jetstream" in message
    assert "\n" not in message
    assert broker.bodies("fetch") == []


async def test_the_releaser_never_sends_a_task_before_its_time() -> None:
    # Given a task delayed until 05:15 and a releaser whose clock says 05:14:59
    broker, ledger, clock = MemoryBroker(), MemoryLedger(), Clock()
    producer = MemoryProducer(broker)
    sent = await send_delayed(producer, "fetch", Task.new("fetch", "x"), START + timedelta(minutes=15),
                              ledger=ledger)
    releaser = DelayReleaser(ledger, producer, task_lists=["fetch"], clock=clock)
    clock.advance(15 * 60 - 1)
    # When it looks, nothing is sent
    assert await releaser.release_due() == 0
    assert broker.bodies("fetch") == []
    # Then at 05:15 the task goes to its topic, run_at kept, and is outstanding in the ledger
    clock.advance(1)
    assert await releaser.release_due() == 1
    assert bodies(broker) == [sent.task]
    record = await ledger.find("fetch", sent.id)
    assert record is not None and record.state == "created"
    assert await releaser.release_due() == 0


async def test_replicas_sharing_a_ledger_release_each_task_once(tmp_path: Path) -> None:
    # Given 20 delayed tasks in one SQLite ledger and three workers' releasers on it
    broker, clock = MemoryBroker(), Clock()
    ledgers = [SqliteLedger(str(tmp_path / "ledger.db")) for _ in range(3)]
    sent = [await send_delayed(MemoryProducer(broker), "fetch", Task.new("fetch", str(i)),
                               START + timedelta(seconds=i), ledger=ledgers[0]) for i in range(20)]
    releasers = [DelayReleaser(ledger, MemoryProducer(broker), task_lists=["fetch"], clock=clock)
                 for ledger in ledgers]
    clock.advance(60)
    # When all of them release at once
    counts = await asyncio.gather(*(r.release_due() for r in releasers))
    # Then every task was sent exactly once
    assert sum(counts) == 20
    assert sorted(t.id for t in bodies(broker)) == sorted(s.id for s in sent)
    for ledger in ledgers:
        await ledger.close()


async def test_a_delayed_task_survives_a_restart(tmp_path: Path) -> None:
    # Given a task delayed in a SQLite ledger by a process that then exits
    path = str(tmp_path / "ledger.db")
    broker, clock = MemoryBroker(), Clock()
    first = SqliteLedger(path)
    sent = await send_delayed(MemoryProducer(broker), "fetch", Task.new("fetch", "x"),
                              START + timedelta(hours=1), ledger=first)
    await first.close()
    # When a new worker starts after its time with a fresh connection to the ledger
    second = SqliteLedger(path)
    clock.advance(3600)
    releaser = DelayReleaser(second, MemoryProducer(broker), clock=clock)
    await releaser.start()
    await releaser.stop()
    # Then it sends the task (every task list searched when none is named)
    assert [t.id for t in bodies(broker)] == [sent.id]
    await second.close()


async def test_a_failed_send_is_released_again_later_not_lost() -> None:
    broker, ledger, clock = MemoryBroker(), MemoryLedger(), Clock()
    sent = await send_delayed(MemoryProducer(broker), "fetch", Task.new("fetch", "x"), START, ledger=ledger)
    broker.inject(Fault.SEND_FAILS)
    releaser = DelayReleaser(ledger, MemoryProducer(broker), task_lists=["fetch"], clock=clock)
    assert await releaser.release_due() == 0
    assert releaser.send_errors == 1 and broker.bodies("fetch") == []
    clock.advance(5)
    assert await releaser.release_due() == 1
    assert [t.id for t in bodies(broker)] == [sent.id]


async def test_stop_logs_how_many_wait_and_when_the_next_is_due(caplog: pytest.LogCaptureFixture) -> None:
    broker, ledger, clock = MemoryBroker(), MemoryLedger(), Clock()
    producer = MemoryProducer(broker)
    for minutes in (30, 10, 20):
        await send_delayed(producer, "fetch", Task.new("fetch", "x"), START + timedelta(minutes=minutes),
                           ledger=ledger)
    await ledger.schedule(Task.new("fetch", "retry"), None, START, topic="fetch", kind=ScheduleKind.RETRY)
    releaser = DelayReleaser(ledger, producer, task_lists=["fetch"], clock=clock)
    caplog.set_level(logging.INFO, logger="task.delay_release")
    await releaser.start()
    await releaser.stop()
    assert "3 delayed, next at 2026-12-01T05:10:00Z" in caplog.messages
    assert broker.bodies("fetch") == []  # a pending retry is the retry app's to release


async def cancel_fixture() -> tuple[Ledger, MemoryBroker, Clock, DelayReleaser]:
    broker, ledger, clock = MemoryBroker(), MemoryLedger(), Clock()
    return ledger, broker, clock, DelayReleaser(ledger, MemoryProducer(broker), clock=clock)


async def test_cancel_removes_a_waiting_task_and_says_so_for_released_and_unknown_ones() -> None:
    ledger, broker, clock, releaser = await cancel_fixture()
    producer = MemoryProducer(broker)
    keep = await send_delayed(producer, "fetch", Task.new("fetch", "keep"), START + timedelta(minutes=5),
                              ledger=ledger)
    drop = await send_delayed(producer, "fetch", Task.new("fetch", "drop"), START + timedelta(minutes=5),
                              ledger=ledger)
    # Cancelled: it never runs
    result = await cancel_delayed(ledger, drop.id)
    assert (result.outcome, result.task_list, result.at) == (CancelOutcome.CANCELLED, "fetch", drop.at)
    assert "cancelled" in result.message and drop.id in result.message
    clock.advance(600)
    assert await releaser.release_due() == 1
    assert [t.id for t in bodies(broker)] == [keep.id]
    # Released already: too late, and the message says so
    late = await cancel_delayed(ledger, keep.id, task_list="fetch")
    assert late.outcome is CancelOutcome.RELEASED and "too late" in late.message
    # Unknown, and cancelled twice: unknown
    for id in ("no-such-id", drop.id):
        unknown = await cancel_delayed(ledger, id)
        assert unknown.outcome is CancelOutcome.UNKNOWN and "no delayed task" in unknown.message


def test_send_delay_without_a_ledger_on_the_file_bus_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = taskbus("send", "fetch", "x", "--bus", "file:./data/", "--delay", "15m", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        "taskbus: the file bus cannot delay a task by itself and no ledger is set: add --ledger "
        "sqlite:./taskbus-data/ledger.db, or use a bus with native delay (nsq, jetstream)")
    assert not (tmp_path / "data" / "fetch.jsonl").exists()
    bad = taskbus("send", "fetch", "x", "--at", "tomorrow", "--ledger", "sqlite:l.db", cwd=tmp_path)
    assert bad.returncode == 2 and "--at 'tomorrow' is not an RFC 3339 time" in bad.stderr


async def test_a_finite_file_bus_worker_releases_what_is_due_and_says_what_waits(tmp_path: Path) -> None:
    # Given on the file bus one task delayed until a time past and one delayed an hour
    ledger = SqliteLedger(str(tmp_path / "ledger.db"))
    producer = open_producer(f"file:{tmp_path}/data/", credentials=Credentials())
    now = datetime.now(UTC)
    await send_delayed(producer, "nop", Task.new("nop", "past"), now - timedelta(days=1), ledger=ledger)
    later = await send_delayed(producer, "nop", Task.new("nop", "later"), now + timedelta(hours=1),
                               ledger=ledger)
    await ledger.close()
    assert not (tmp_path / "data" / "nop.jsonl").exists()  # neither is on the bus yet
    # When a worker runs to the end of the file bus
    run = await asyncio.to_thread(taskbus, "worker", "nop", "--bus", "file:./data/",
                                  "--ledger", "sqlite:./ledger.db", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    # Then the due task ran, the other still waits, and the log says when it is due
    done = [json.loads(line) for line in (tmp_path / "data" / "done.jsonl").read_text().splitlines()]
    assert [(d["info"], d["result"]) for d in done] == [("past", "complete")]
    assert f"1 delayed, next at {later.task.get_meta('run_at')}" in run.stderr


async def test_the_releaser_polls_just_after_each_whole_second() -> None:
    # Given a task due at 05:00:01 and a releaser started at 05:00:00.3
    broker, ledger = MemoryBroker(), MemoryLedger()
    clock = Clock(START + timedelta(seconds=0.3))
    sent = await send_delayed(MemoryProducer(broker), "fetch", Task.new("fetch", "x"),
                              START + timedelta(seconds=1), ledger=ledger)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        clock.advance(seconds)
        if len(waits) >= 3:
            await asyncio.Event().wait()  # until stop()

    releaser = DelayReleaser(ledger, MemoryProducer(broker), clock=clock, sleep=sleep)
    await releaser.start()
    while len(waits) < 3:
        await asyncio.sleep(0)
    await releaser.stop()
    # Then it woke just after 05:00:01 (and each second after), when the task was due
    assert waits == [0.705, 1.0, 1.0]
    assert [t.id for t in bodies(broker)] == [sent.id]


def test_bench_lateness_figures_are_percentiles_in_ms_and_count_early_arrivals() -> None:
    late = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert lateness_figures("memory", "ledger", late) == {
        "bus": "memory", "held_by": "ledger", "tasks": 100, "p50_ms": 50.0, "p99_ms": 99.0,
        "max_ms": 100.0, "early": 0}
    assert lateness_figures("nsq", "native", [-0.001, 0.002])["early"] == 1


async def test_a_ledger_outage_is_logged_once_by_the_releaser_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    # Given a releaser polling a ledger that is down for five polls
    from task.ledger.memory import LedgerFault

    broker, ledger, clock = MemoryBroker(), MemoryLedger(), Clock()
    releaser = DelayReleaser(ledger, MemoryProducer(broker), task_lists=["fetch"], clock=clock)
    ledger.inject(LedgerFault.UNAVAILABLE, times=5)
    with caplog.at_level(logging.INFO, logger="task.delay_release"):
        for _ in range(6):
            await releaser.release_due()
    # Then the outage is one ERROR line (not one per poll) and its end one line
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot read due delayed tasks" in errors[0].getMessage()
    assert [r.getMessage() for r in caplog.records if "is back" in r.getMessage()] == [
        "delayed tasks: the ledger is back after 5 failed reads"]
    assert releaser.ledger_errors == 5
