"""The Launcher against the memory bus: every option, shutdown, failures, the ledger."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from task import Result, Task, Worker, completed, failed, interrupted, invalid_worker
from task.bus.memory import Fault, MemoryBroker, MemoryConsumer, MemoryProducer
from task.launcher import FORCED_CLOSE_MSG, Launcher, LauncherOptions
from task.ledger.memory import LedgerFault, MemoryLedger
from task.worker import TaskContext


class Echo(Worker):
    task_type = "echo"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        return completed("echo %s", self.info)


class Boom(Worker):
    task_type = "echo"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        raise ValueError(f"cannot handle {self.info}")


class Blocking(Worker):
    """A plain-def worker: must run in a thread, not on the event loop."""

    task_type = "echo"
    threads: ClassVar[set[str]] = set()

    def do_task(self, ctx: TaskContext) -> tuple[str, str]:  # type: ignore[override]
        Blocking.threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return completed("slept")


class Slow(Worker):
    """Sleeps for the seconds in its info, stopping early only when told to honour ctx."""

    task_type = "echo"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        await asyncio.sleep(float(self.info))
        return completed("slept %s", self.info)


class Polite(Worker):
    task_type = "echo"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        await ctx.wait_stopping()
        return interrupted()


class Meta(Worker):
    task_type = "echo"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        self.meta["rows"] = ["42"]
        return completed()


def done_tasks(broker: MemoryBroker, topic: str = "done") -> list[Task]:
    return [Task.from_json(body) for body in broker.bodies(topic)]


def make(broker: MemoryBroker, make_worker: Callable[[str], Worker], *, topic: str = "echo",
         ledger: MemoryLedger | None = None, **options: Any) -> Launcher:
    options.setdefault("task_type", "echo")
    opts = LauncherOptions(topic=topic, **options)
    consumer = MemoryConsumer(broker, topic, prefetch=opts.max_in_progress)
    return Launcher(make_worker, consumer, MemoryProducer(broker), opts, ledger)


def publish(broker: MemoryBroker, n: int, type: str = "echo", topic: str = "echo", info: str = "x") -> list[Task]:
    tasks = [Task.new(type, f"{info}" if info != "x" else f"{i}") for i in range(n)]
    for task in tasks:
        broker.publish(topic, task.to_json())
    return tasks


async def until(condition: Callable[[], bool], patience: float = 20.0) -> None:
    """Wait for ``condition`` (an event the test needs, not a time window); fail after ``patience``."""
    async with asyncio.timeout(patience):
        while not condition():
            await asyncio.sleep(0.01)


async def run_drained(launcher: Launcher, broker: MemoryBroker, topic: str = "echo") -> None:
    broker.close_topic(topic)
    await asyncio.wait_for(launcher.run(), 30)


async def test_every_task_comes_back_done_with_its_fields_kept() -> None:
    broker = MemoryBroker()
    sent = [Task.new("echo", str(i), meta="z=2&a=1" if i == 0 else None) for i in range(20)]
    for task in sent:
        broker.publish("echo", task.to_json())
    launcher = make(broker, Echo, max_in_progress=5)
    await run_drained(launcher, broker)
    done = {t.id: t for t in done_tasks(broker)}
    assert set(done) == {t.id for t in sent}
    for task in sent:
        got = done[task.id]
        assert (got.type, got.info, got.created, got.meta) == (task.type, task.info, task.created, task.meta)
        assert got.result == "complete" and got.msg == f"echo {task.info}"
        assert got.started and got.ended
    assert broker.pending("echo") == 0
    assert launcher.stats()["results"] == {"complete": 20}


async def test_a_worker_that_raises_ends_its_task_as_error_and_the_launcher_goes_on() -> None:
    broker = MemoryBroker()
    publish(broker, 3)
    await run_drained(make(broker, Boom), broker)
    assert [(t.result, t.msg) for t in done_tasks(broker)] == [
        ("error", "cannot handle 0"), ("error", "cannot handle 1"), ("error", "cannot handle 2")]


async def test_a_plain_def_worker_runs_in_a_thread() -> None:
    broker = MemoryBroker()
    publish(broker, 8)
    await run_drained(make(broker, Blocking, max_in_progress=4), broker)
    assert len(done_tasks(broker)) == 8
    assert Blocking.threads and all(name.startswith("taskbus-worker") for name in Blocking.threads)


async def test_worker_meta_is_merged_the_go_way() -> None:
    broker = MemoryBroker()
    task = Task.new("echo", "i", meta="b=2&a=1")
    broker.publish("echo", task.to_json())
    await run_drained(make(broker, Meta), broker)
    assert done_tasks(broker)[0].meta == "a=1&b=2&rows=42"


async def test_meta_untouched_when_worker_sets_none() -> None:
    # Go vector meta_worker_not_implementing_interface: meta is not even re-sorted
    broker = MemoryBroker()
    broker.publish("echo", Task.new("echo", "i", meta="b=2&a=1").to_json())
    await run_drained(make(broker, Echo), broker)
    assert done_tasks(broker)[0].meta == "b=2&a=1"


async def test_invalid_worker_fails_the_task() -> None:
    broker = MemoryBroker()
    publish(broker, 1)
    await run_drained(make(broker, lambda info: invalid_worker("bad info %r", info)), broker)
    assert (done_tasks(broker)[0].result, done_tasks(broker)[0].msg) == ("error", "bad info '0'")


async def test_a_worker_returning_nonsense_is_an_error_not_a_crash() -> None:
    class Wrong(Worker):
        async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
            return "done"  # type: ignore[return-value]

    broker = MemoryBroker()
    publish(broker, 1)
    await run_drained(make(broker, Wrong), broker)
    assert "do_task must return (Result, msg)" in done_tasks(broker)[0].msg


async def test_reject_bad_type_sends_an_error_naming_both_types() -> None:
    broker = MemoryBroker()
    publish(broker, 1, type="other")
    launcher = make(broker, Echo, reject_bad_type=True)
    await run_drained(launcher, broker)
    (done,) = done_tasks(broker)
    assert done.result == "error" and "'other'" in done.msg and "'echo'" in done.msg
    assert launcher.stats()["tasks_rejected"] == 1 and broker.pending("echo") == 0


async def test_ignore_bad_type_acknowledges_and_sends_nothing() -> None:
    broker = MemoryBroker()
    publish(broker, 2, type="other")
    publish(broker, 1)
    launcher = make(broker, Echo, ignore_bad_type=True)
    await run_drained(launcher, broker)
    assert [t.type for t in done_tasks(broker)] == ["echo"]
    assert launcher.stats()["tasks_ignored"] == 2 and broker.pending("echo") == 0


@pytest.mark.parametrize("max_in_progress", [1, 10])
async def test_a_lifetime_of_n_runs_exactly_n_tasks(max_in_progress: int) -> None:
    broker = MemoryBroker()
    publish(broker, 30)
    launcher = make(broker, Echo, max_in_progress=max_in_progress, lifetime_workers=7)
    await asyncio.wait_for(launcher.run(), 10)
    assert len(done_tasks(broker)) == 7
    assert broker.pending("echo") == 23  # the rest wait on the bus, none half-taken


async def test_an_invalid_message_in_the_lifetime_does_not_count() -> None:
    broker = MemoryBroker()
    broker.publish("echo", b"garbage")
    publish(broker, 3)
    launcher = make(broker, Echo, lifetime_workers=3)
    await asyncio.wait_for(launcher.run(), 10)
    assert len(done_tasks(broker)) == 3 and launcher.stats()["tasks_invalid"] == 1


async def test_task_timeout_ends_the_task_as_error() -> None:
    broker = MemoryBroker()
    broker.publish("echo", Task.new("echo", "5").to_json())
    broker.publish("echo", Task.new("echo", "0").to_json())
    await run_drained(make(broker, Slow, task_timeout=0.2), broker)
    results = sorted((t.info, t.result, t.msg) for t in done_tasks(broker))
    assert results == [("0", "complete", "slept 0"), ("5", "error", "task timed out after 0.2s")]


async def test_stop_lets_in_flight_tasks_finish_within_the_kill_time() -> None:
    broker = MemoryBroker()
    publish(broker, 3, info="0.3")
    publish(broker, 5, info="0.3")
    launcher = make(broker, Slow, max_in_progress=3, worker_kill_time=5)
    running = asyncio.create_task(launcher.run())
    await until(lambda: launcher.stats()["tasks_running"] == 3)
    await launcher.stop()
    await asyncio.wait_for(running, 10)
    done = done_tasks(broker)
    assert [t.result for t in done] == ["complete"] * 3  # the three in flight finished normally
    assert broker.pending("echo") == 5  # the unstarted five are still on the bus


async def test_tasks_past_the_kill_time_end_as_forced_close_and_are_acknowledged() -> None:
    broker = MemoryBroker()
    publish(broker, 4, info="60")
    launcher = make(broker, Slow, max_in_progress=4, worker_kill_time=0.2)
    running = asyncio.create_task(launcher.run())
    await until(lambda: launcher.stats()["tasks_running"] == 4)
    await launcher.stop()
    await asyncio.wait_for(running, 10)  # not the tasks' 60 s: they were cancelled
    assert [(t.result, t.msg) for t in done_tasks(broker)] == [("error", FORCED_CLOSE_MSG)] * 4
    assert broker.pending("echo") == 0


async def test_a_polite_worker_sees_stopping() -> None:
    broker = MemoryBroker()
    publish(broker, 2)
    launcher = make(broker, Polite, max_in_progress=2, worker_kill_time=5)
    running = asyncio.create_task(launcher.run())
    await until(lambda: launcher.stats()["tasks_running"] == 2)
    await launcher.stop()
    await asyncio.wait_for(running, 5)
    assert [(t.result, t.msg) for t in done_tasks(broker)] == [("error", "task interrupted")] * 2


async def test_a_done_task_that_cannot_be_sent_at_first_is_retried() -> None:
    broker = MemoryBroker()
    publish(broker, 1)
    broker.inject(Fault.SEND_FAILS, times=2)
    launcher = make(broker, Echo)
    await run_drained(launcher, broker)
    assert len(done_tasks(broker)) == 1 and launcher.stats()["send_failures"] == 0


async def test_a_done_task_that_cannot_be_sent_is_not_acknowledged_but_redelivered() -> None:
    broker = MemoryBroker()
    publish(broker, 1)
    broker.inject(Fault.SEND_FAILS, times=4)  # every retry of the first delivery fails
    launcher = make(broker, Echo)
    running = asyncio.create_task(launcher.run())
    await until(lambda: bool(done_tasks(broker)))
    await launcher.stop()
    await running
    (done,) = done_tasks(broker)
    assert done.result == "complete"
    stats = launcher.stats()
    assert stats["send_failures"] == 1 and stats["tasks_redelivered"] == 1


async def test_malformed_messages_are_counted_dead_lettered_and_never_stop_the_launcher() -> None:
    broker = MemoryBroker()
    bad = [b"\xff\xfe garbage", b"[1,2]", b'{"type": 5}', b"null", b"{not json"]
    for i, body in enumerate(bad):
        publish(broker, 1, info=f"ok{i}")
        broker.publish("echo", body)
    launcher = make(broker, Echo, dead_letter_topic="dead")
    await run_drained(launcher, broker)
    assert len(done_tasks(broker)) == 5
    assert launcher.stats()["tasks_invalid"] == 5
    letters = [json.loads(b) for b in broker.bodies("dead")]
    assert letters[0]["body_b64"] and "body" not in letters[0]
    assert [d.get("body") for d in letters[1:]] == [b.decode() for b in bad[1:]]
    assert all(d["topic"] == "echo" and d["attempts"] == 1 and d["reason"] for d in letters)
    assert broker.pending("echo") == 0


async def test_the_ledger_sees_started_and_done_and_keeps_nothing_outstanding() -> None:
    broker, ledger = MemoryBroker(), MemoryLedger()
    tasks = publish(broker, 5)
    for task in tasks:
        await ledger.created(task, "echo")
    await run_drained(make(broker, Echo, ledger=ledger), broker)
    assert [r async for r in ledger.outstanding("echo", older_than=0)] == []


async def test_a_long_task_is_started_and_touched_in_the_ledger() -> None:
    broker, ledger = MemoryBroker(), MemoryLedger()
    (task,) = publish(broker, 1, info="60")
    launcher = make(broker, Slow, ledger=ledger, heartbeat_interval=0.2, worker_kill_time=0)
    running = asyncio.create_task(launcher.run())
    started: list[float] = []

    async def written() -> float | None:
        record = await ledger.find("echo", task.id)
        return record.updated_at if record is not None and record.state == "started" else None

    async with asyncio.timeout(20):
        # the task is recorded as started...
        while not started:
            if (at := await written()) is not None:
                started.append(at)
            await asyncio.sleep(0.01)
        # ...and touched while it runs
        while (await written() or 0) <= started[0]:
            await asyncio.sleep(0.01)
    await launcher.stop()
    await asyncio.wait_for(running, 20)
    assert await ledger.find("echo", task.id) is None  # forced to close, done: forgotten


async def test_a_ledger_outage_never_fails_a_task() -> None:
    broker, ledger = MemoryBroker(), MemoryLedger()
    publish(broker, 5)
    ledger.inject(LedgerFault.UNAVAILABLE, times=3)
    launcher = make(broker, Echo, ledger=ledger)
    await run_drained(launcher, broker)
    assert [t.result for t in done_tasks(broker)] == ["complete"] * 5
    stats = launcher.stats()["ledger"]
    assert isinstance(stats, dict) and stats["failures"] >= 1 and stats["pending_writes"] == 0


async def test_setup_and_teardown_run_once_per_launcher() -> None:
    calls: list[str] = []

    class Pooled(Worker):
        task_type = "echo"

        @classmethod
        async def setup(cls) -> None:
            calls.append("setup")

        @classmethod
        async def teardown(cls) -> None:
            calls.append("teardown")

        async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
            calls.append("task")
            return completed()

    broker = MemoryBroker()
    publish(broker, 2)
    await run_drained(make(broker, Pooled), broker)
    assert calls == ["setup", "task", "task", "teardown"]


async def test_stats_report_what_happened() -> None:
    broker = MemoryBroker()
    publish(broker, 3)
    broker.publish("echo", b"junk")
    launcher = make(broker, lambda info: Boom(info) if info == "1" else Echo(info))
    await run_drained(launcher, broker)
    stats = launcher.stats()
    assert stats["tasks_consumed"] == 4 and stats["tasks_invalid"] == 1 and stats["tasks_finished"] == 3
    assert stats["results"] == {"complete": 2, "error": 1} and stats["tasks_running"] == 0
    assert isinstance(stats["consumer"], dict) and isinstance(stats["mean_task_s"], float)


async def test_failed_helper_and_results() -> None:
    assert failed(ValueError("x")) == (Result.ERROR, "x")
    assert completed("%d rows", 3) == (Result.COMPLETE, "3 rows")
