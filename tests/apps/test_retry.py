"""The retry app: backoff, the per-type count, the failed topic and restart survival.

Time is an injected clock: the tests move it forward and call ``release_due`` instead of
sleeping through real minutes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.apps.retry import RetryApp, RetryRule, RetrySettings
from task.bus.memory import Fault, MemoryBroker, MemoryConsumer, MemoryProducer
from task.errors import ConfigError
from task.ledger.base import Ledger, State
from task.ledger.memory import LedgerFault, MemoryLedger
from task.ledger.registry import open_ledger
from task.settings import load_settings
from task.task import Task
from tests.apps.status import get_stats
from tests.servers.ports import free_port

START = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def failed(task_type: str = "fetch", retry: int | None = None, id: str = "t-1") -> bytes:
    task = Task.new(task_type, "s3://bucket/file", id=id, meta={"job": "x"})
    if retry is not None:
        task.set_meta("retry", str(retry))
    task.start(START)
    task.end("error", "connection reset", START)
    return task.to_json()


def make_app(
    broker: MemoryBroker, clock: Clock, ledger: Ledger | None = None, **rule: object
) -> RetryApp:
    values: dict[str, object] = {"type": "fetch", "count": 3, "delay": 10, "jitter": 0} | rule
    return RetryApp(
        consumer=MemoryConsumer(broker, "done", "retry"),
        producer=MemoryProducer(broker),
        rules=[RetryRule.model_validate(values)],
        ledger=ledger,
        clock=clock,
        poll_interval=0.01,
        rng=random.Random(7),
    )


async def deliver(app: RetryApp, broker: MemoryBroker, body: bytes) -> None:
    """Put one done task on the bus and let the app handle it."""
    broker.publish("done", body)
    message = await app.consumer.msg()
    assert message is not None
    await app.handle(message)


async def test_backoff_doubles_until_the_count_then_the_task_goes_to_retry_failed() -> None:
    # Given a rule: 3 retries, first after 10 s, doubling, no jitter
    broker, clock = MemoryBroker(), Clock()
    async with make_app(broker, clock) as app:
        waits = []
        body = failed()
        for retry in (1, 2, 3):
            # When the task fails (again)
            await deliver(app, broker, body)
            # Then nothing is sent before its delay is over ...
            waited = 0.0
            while await app.release_due() == 0:
                clock.advance(1)
                waited += 1
            waits.append(waited)
            # ... and then it is resent as the same task with retry=n and no outcome
            resent = Task.from_json(broker.bodies("fetch")[-1])
            assert (resent.id, resent.info, resent.get_meta("retry")) == ("t-1", "s3://bucket/file", str(retry))
            assert resent.get_meta("job") == "x"
            assert not (resent.result or resent.msg or resent.started or resent.ended)
            resent.end("error", "still broken", clock())
            body = resent.to_json()
        assert waits == [10, 20, 40]
        # When it fails a fourth time, it is out of retries: its done task goes to retry-failed
        await deliver(app, broker, body)
        assert broker.bodies("retry-failed") == [body]
        clock.advance(3600)
        assert await app.release_due() == 0
        assert len(broker.bodies("fetch")) == 3
        assert app.stats()["failed"] == 1 and broker.pending("done") == 0


async def test_pending_retries_survive_a_restart_in_the_ledger() -> None:
    # Given an app with a ledger that takes a failed task and then dies before its delay
    broker, clock, ledger = MemoryBroker(), Clock(), MemoryLedger()
    first = make_app(broker, clock, ledger)
    await deliver(first, broker, failed())
    assert first.pending() == 0 and (await ledger.stats("fetch")).scheduled == 1
    del first  # a crash: nothing is flushed or closed
    # When a new app starts on the same ledger and the delay passes
    clock.advance(10)
    second = make_app(broker, clock, ledger)
    assert await second.release_due() == 1
    # Then the retry is sent once
    assert [Task.from_json(b).get_meta("retry") for b in broker.bodies("fetch")] == ["1"]
    assert await second.release_due() == 0


async def test_a_restarted_app_sends_the_retry_the_stopped_one_scheduled(tmp_path: Path) -> None:
    # Given a retry app on a SQLite ledger that took a failed task, then was stopped
    broker, clock = MemoryBroker(), Clock()
    url = f"sqlite:{tmp_path / 'ledger.db'}"
    broker.publish("done", failed())
    first = make_app(broker, clock, open_ledger(url))
    running = asyncio.create_task(first.run())
    await until(lambda: first.counts["scheduled"] == 1)
    await first.stop()
    await asyncio.wait_for(running, 5)
    assert broker.bodies("fetch") == []
    # When a new app (a new process: a new ledger connection) runs after the delay
    clock.advance(10)
    second = make_app(broker, clock, open_ledger(url))
    running = asyncio.create_task(second.run())
    await until(lambda: len(broker.bodies("fetch")) == 1)
    await second.stop()
    await asyncio.wait_for(running, 5)
    # Then it sends the retry the first one scheduled, exactly once
    [resent] = [Task.from_json(b) for b in broker.bodies("fetch")]
    assert (resent.id, resent.get_meta("retry")) == ("t-1", "1")


async def until(condition: Callable[[], bool], seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


async def test_due_retries_are_recorded_as_created_for_recover() -> None:
    broker, clock, ledger = MemoryBroker(), Clock(), MemoryLedger()
    app = make_app(broker, clock, ledger)
    await deliver(app, broker, failed())
    clock.advance(10)
    assert await app.release_due() == 1
    record = await ledger.find("fetch", "t-1")
    assert record is not None and record.state is State.CREATED
    assert record.task.get_meta("retry") == "1"


class Handed:
    """A done task handed to the app by hand: records whether it was acked or given back."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.attempt = 1
        self.settled: list[tuple[str, float]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", 0.0))

    async def nack(self, delay: float = 0) -> None:
        self.settled.append(("nack", delay))

    async def in_progress(self) -> None:
        pass


async def test_a_ledger_that_refuses_the_retry_gets_the_done_task_back_on_the_bus() -> None:
    # Given the retry app with a ledger that is down for the look-up and the schedule
    broker, clock, ledger = MemoryBroker(), Clock(), MemoryLedger()
    app = make_app(broker, clock, ledger)
    ledger.inject(LedgerFault.UNAVAILABLE, times=2)
    # When a failed task's done task comes
    first = Handed(failed())
    await app.handle(first)
    # Then it is not acknowledged but given back with a delay, and no retry is held in memory
    # only (it would be lost with the app)
    [(how, delay)] = first.settled
    assert how == "nack" and delay > 0
    assert app.pending() == 0 and app.counts["scheduled"] == 0 and app.counts["ledger_errors"] == 2
    # And when the bus brings it back and the ledger is up, the retry is kept in the ledger
    again = Handed(failed())
    await app.handle(again)
    assert again.settled == [("ack", 0.0)]
    assert app.counts["scheduled"] == 1 and app.counts["duplicates"] == 0
    clock.advance(10)
    assert [e.task.get_meta("retry") for e in await ledger.due("fetch", clock())] == ["1"]


async def test_without_a_ledger_the_retry_is_held_in_memory() -> None:
    broker, clock = MemoryBroker(), Clock()
    app = make_app(broker, clock)
    message = Handed(failed())
    await app.handle(message)
    assert message.settled == [("ack", 0.0)] and app.pending() == 1
    clock.advance(10)
    assert await app.release_due() == 1


def test_wait_is_capped_by_max_delay_and_spread_by_jitter() -> None:
    rule = RetryRule(type="t", delay=10, backoff=3, max_delay=60, jitter=0.2)
    rng = random.Random(1)
    fifth = [rule.wait(5, rng) for _ in range(200)]  # 10 * 3**4 = 810, capped at 60
    assert all(48 <= w <= 72 for w in fifth)
    assert max(fifth) - min(fifth) > 10  # jitter really spreads them
    assert RetryRule(type="t", delay=10, jitter=0).wait(2, rng) == 20


async def test_other_results_types_and_junk_are_acknowledged_and_counted() -> None:
    broker, clock = MemoryBroker(), Clock()
    ok = Task.new("fetch", "i")
    ok.end("complete", "")
    other = Task.from_json(failed("other-type"))
    async with make_app(broker, clock) as app:
        for body in (ok.to_json(), other.to_json(), b"not json", b'{"TYPE":"fetch"}'):
            await deliver(app, broker, body)
        clock.advance(10_000)
        assert await app.release_due() == 0
    assert (app.counts["ignored"], app.counts["invalid"], app.counts["scheduled"]) == (2, 2, 0)
    assert broker.pending("done") == 0 and broker.sent == [("done", b) for b in broker.bodies("done")]


async def test_failed_topic_unreachable_nacks_so_the_done_task_comes_back() -> None:
    broker, clock = MemoryBroker(), Clock()
    async with make_app(broker, clock, count=1) as app:
        body = failed(retry=1)
        broker.inject(Fault.SEND_FAILS)
        await deliver(app, broker, body)
        assert broker.bodies("retry-failed") == []
        await asyncio.sleep(0.05)  # the nack delay is the poll interval
        again = await app.consumer.msg()
        assert again is not None and again.attempt == 2
        await app.handle(again)
        assert broker.bodies("retry-failed") == [body]


async def test_a_resend_that_fails_is_tried_again_later() -> None:
    broker, clock = MemoryBroker(), Clock()
    async with make_app(broker, clock) as app:
        await deliver(app, broker, failed())
        clock.advance(10)
        broker.inject(Fault.SEND_FAILS)
        assert await app.release_due() == 0
        clock.advance(5)
        assert await app.release_due() == 1
        assert app.counts["send_errors"] == 1


async def test_run_consumes_until_drained_then_sends_what_it_holds(caplog: pytest.LogCaptureFixture) -> None:
    # Given two failed tasks on a finite done topic and no ledger
    broker, clock = MemoryBroker(), Clock()
    broker.publish("done", failed(id="a"))
    broker.publish("done", failed(id="b"))
    broker.close_topic("done")
    app = make_app(broker, clock)
    with caplog.at_level(logging.WARNING, "task.apps.retry"):
        running = asyncio.create_task(app.run())
        # When the app holds both retries and the clock passes their delay
        while app.pending() < 2:
            await asyncio.sleep(0.01)
        assert not running.done()
        clock.advance(10)
        # Then both are sent and run() returns by itself
        assert await asyncio.wait_for(running, 5) == 0
    assert sorted(Task.from_json(b).id for b in broker.bodies("fetch")) == ["a", "b"]
    assert "memory only" in caplog.text


async def test_a_failed_ack_is_counted_and_does_not_stop_the_app() -> None:
    broker, clock = MemoryBroker(), Clock()
    broker.inject(Fault.ACK_FAILS)
    broker.publish("done", failed())
    broker.close_topic("done")
    app = make_app(broker, clock)
    running = asyncio.create_task(app.run())
    await until(lambda: app.pending() == 1)
    clock.advance(10)
    assert await asyncio.wait_for(running, 5) == 0
    assert app.counts["ack_errors"] == 1 and len(broker.bodies("fetch")) == 1


async def test_a_redelivered_done_task_keeps_its_retry_time_and_adds_none() -> None:
    broker, clock = MemoryBroker(), Clock()
    app = make_app(broker, clock)
    await deliver(app, broker, failed())
    clock.advance(5)
    await deliver(app, broker, failed())  # the bus brings the same done task again
    assert app.pending() == 1 and app.counts["duplicates"] == 1
    clock.advance(5)  # the first delivery's time: kept, not pushed out
    assert await app.release_due() == 1 and await app.release_due() == 0
    await deliver(app, broker, failed())  # and once more after the retry went out
    clock.advance(3600)
    assert await app.release_due() == 0
    assert len(broker.bodies("fetch")) == 1


#: The README's example, word for word.
README_RULE = "fetch count=3 delay=30s backoff=2 max_delay=1h jitter=0.1"


def write_failed_fetch(data: Path) -> None:
    """What a worker leaves on the file bus when task t-1 of type fetch failed at START."""
    data.mkdir(exist_ok=True)
    with (data / "done.jsonl").open("ab") as out:
        out.write(failed() + b"\n")


async def run_retry(clock: Clock, bus: str = "file:./taskbus-data/") -> RetryApp:
    """One ``taskbus retry`` run of the README on a finite file bus, at ``clock``'s time."""
    settings = load_settings(RetrySettings, None, bus=bus, ledger="sqlite:./taskbus-data/ledger.db",
                             rule=[README_RULE])
    app = RetryApp.from_settings(settings)
    app.clock = clock
    assert await asyncio.wait_for(app.run(), 10) == 0
    return app


def resent(data: Path) -> list[Task]:
    path = data / "fetch.jsonl"
    return [Task.from_json(line) for line in path.read_bytes().splitlines()] if path.exists() else []


async def scheduled(data: Path) -> int:
    ledger = open_ledger(f"sqlite:{data / 'ledger.db'}")
    try:
        return (await ledger.stats("fetch")).scheduled
    finally:
        await ledger.close()


async def test_the_readme_retry_example_resends_on_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the README's setup: a fetch task failed, its done task is in ./taskbus-data/
    monkeypatch.chdir(tmp_path)
    data, clock = tmp_path / "taskbus-data", Clock()
    write_failed_fetch(data)
    # When `taskbus retry` runs: it schedules retry 1 in the ledger and exits
    await run_retry(clock)
    assert resent(data) == [] and await scheduled(data) == 1
    # When it runs again once the delay (30s, +-10%) is over
    clock.advance(40)
    second = await run_retry(clock)
    # Then the retry is sent, the ledger holds nothing scheduled any more
    [task] = resent(data)
    assert (task.type, task.id, task.get_meta("retry"), task.result) == ("fetch", "t-1", "1", "")
    assert await scheduled(data) == 0 and second.counts["resent"] == 1
    # And a third run sends nothing more
    clock.advance(3600)
    await run_retry(clock)
    assert len(resent(data)) == 1


async def test_reading_the_same_done_task_again_keeps_its_retry_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run that scheduled retry 1 of a failed task (due 27s..33s after it failed)
    monkeypatch.chdir(tmp_path)
    data, clock = tmp_path / "taskbus-data", Clock()
    write_failed_fetch(data)
    rereading = "file:./taskbus-data/?offset=0"
    await run_retry(clock, rereading)
    # When a run 20s later reads the same done task again
    clock.advance(20)
    await run_retry(clock, rereading)
    # Then the retry is not pushed 30s further out: it is due by 34s as first scheduled
    assert resent(data) == [] and await scheduled(data) == 1
    clock.advance(14)
    await run_retry(clock, rereading)
    assert [t.get_meta("retry") for t in resent(data)] == ["1"]
    # And reading it yet again, with the retry sent and outstanding, sends no second copy
    clock.advance(3600)
    await run_retry(clock, rereading)
    assert len(resent(data)) == 1


async def test_stop_ends_run_and_is_idempotent() -> None:
    broker, clock = MemoryBroker(), Clock()
    app = make_app(broker, clock)
    running = asyncio.create_task(app.run())
    await asyncio.sleep(0.02)
    await app.stop()
    await app.stop()
    assert await asyncio.wait_for(running, 5) == 0


def test_rules_from_flags_and_toml(tmp_path: Path) -> None:
    config = tmp_path / "retry.toml"
    config.write_text('[[rule]]\ntype = "b"\ndelay = "2m"\ntopic = "b-topic"\n')
    settings = load_settings(RetrySettings, str(config), bus="memory:retry-test")
    assert settings.rule == [RetryRule(type="b", delay=120, topic="b-topic")]
    flags = load_settings(RetrySettings, None, rule=["a count=5 delay=30s max_delay=1h"])
    rule = flags.rule[0]
    assert (rule.type, rule.count, rule.delay, rule.max_delay) == ("a", 5, 30, 3600)
    assert RetryRule.model_validate(str(rule)) == rule
    with pytest.raises(ConfigError, match="more than one rule"):
        load_settings(RetrySettings, None, rule=["a", "a count=2"])
    with pytest.raises(ConfigError, match="not a duration"):
        load_settings(RetrySettings, None, rule=["a delay=soon"])
    units = load_settings(RetrySettings, None, poll_interval="500ms", rule=["a delay=90 max_delay=2h"])
    assert (units.poll_interval, units.rule[0].delay, units.rule[0].max_delay) == (0.5, 90, 7200)
    assert load_settings(RetrySettings, None, poll_interval="2").poll_interval == 2


def test_from_settings_needs_a_rule() -> None:
    with pytest.raises(ConfigError, match="at least one rule"):
        RetryApp.from_settings(load_settings(RetrySettings, None, bus="memory:retry-test"))
    app = RetryApp.from_settings(load_settings(RetrySettings, None, bus="memory:retry-test", rule=["a"]))
    assert app.ledger is None and app.failed_topic == "retry-failed"




async def test_status_endpoint_serves_stats() -> None:
    broker, port = MemoryBroker(), free_port()
    app = RetryApp(consumer=MemoryConsumer(broker, "done"), producer=MemoryProducer(broker),
                   rules=[RetryRule(type="fetch")], status_port=port)
    async with app:
        await deliver(app, broker, failed())
        stats = await get_stats(port)
    assert stats["app"] == "retry" and stats["scheduled"] == 1 and stats["memory_only"] is True


async def test_start_each_resend_and_each_give_up_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Given a retry app on a named memory bus with a SQLite-free memory ledger
    broker, clock = MemoryBroker.named("retry-log-test"), Clock()
    settings = load_settings(RetrySettings, None, bus="memory:retry-log-test", ledger="memory:",
                             rule=["fetch count=1 delay=30s jitter=0"], status_port=0)
    app = RetryApp.from_settings(settings)
    app.clock = clock
    with caplog.at_level(logging.INFO, "task.apps.retry"):
        async with app:
            # When a task fails, its retry comes due, and it fails again
            await deliver(app, broker, failed())
            clock.advance(30)
            assert await app.release_due() == 1
            await deliver(app, broker, failed(retry=1))
    # Then one line says how the app runs, one each the retry, the resend and the give-up
    start = caplog.messages[0]
    assert start.startswith("retry starting: bus=memory:retry-log-test topic=done channel=retry")
    assert "ledger=memory:" in start and "rules=fetch count=1 delay=30s" in start
    assert "task t-1 (fetch) retry 1 at 2024-01-31T05:00:30+00:00 (in 30s)" in caplog.messages
    assert "task t-1 (fetch) retry 1 sent to 'fetch'" in caplog.messages
    assert "task t-1 (fetch) out of retries after 1: sent to 'retry-failed'" in caplog.messages
