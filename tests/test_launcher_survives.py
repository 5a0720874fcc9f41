"""Nothing one message does ends the Launcher: a worker's odd code, a bug of ours, a bus
client that raises what it should not. Each such failure is logged once with its traceback,
counted, and the task still ends (as error) or goes back to the bus; after a few attempts a
message that cannot be handled at all is dead-lettered, so it never loops for ever."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from task import Task, Worker, completed
from task.bus.base import Message
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.launcher import POISON_ATTEMPTS, Launcher, LauncherOptions
from task.result import Outcome
from task.worker import MakeWorker, TaskContext


class Fine(Worker):
    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("fine %s", self.info)


class BadMeta(Worker):
    """Overrides ``worker_meta`` and raises in it for info 'bad': a bug in user code that runs
    after ``do_task``, where no try/except of the worker's own protects it."""

    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("fine %s", self.info)

    def worker_meta(self) -> dict[str, list[str]] | None:
        if self.info == "bad":
            raise KeyError("rows")
        return None


class CrashingProducer(MemoryProducer):
    """A bus client with a bug: raises a plain exception (not a BusError) for one body."""

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        if topic == "done" and b'"info":"poison"' in body:
            raise RuntimeError("client bug")
        await super().send(topic, body, key=key)


class AckBug:
    """A message whose ack acknowledges, then raises a plain exception (a bus client's bug)."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.body = message.body
        self.attempt = message.attempt

    async def ack(self) -> None:
        await self.message.ack()
        raise ValueError("ack bug")

    async def nack(self, delay: float = 0) -> None:
        await self.message.nack(delay)

    async def in_progress(self) -> None:
        await self.message.in_progress()


class CrashingAck(MemoryConsumer):
    """Acks of task 'ack-bug' raise."""

    async def msg(self) -> Message | None:
        message = await super().msg()
        if message is not None and b'"info":"ack-bug"' in message.body:
            return AckBug(message)
        return message


def launcher(broker: MemoryBroker, make_worker: MakeWorker, *, producer: MemoryProducer | None = None,
             consumer: MemoryConsumer | None = None, **options: object) -> Launcher:
    opts = LauncherOptions(topic="t", task_type="t", max_in_progress=3, poison_delay=0, **options)  # type: ignore[arg-type]
    return Launcher(make_worker, consumer or MemoryConsumer(broker, "t", prefetch=3),
                    producer or MemoryProducer(broker), opts)


def publish(broker: MemoryBroker, *infos: str) -> None:
    for info in infos:
        broker.publish("t", Task.new("t", info, id=info).to_json())


def done(broker: MemoryBroker) -> dict[str, Task]:
    return {t.id: t for t in map(Task.from_json, broker.bodies("done"))}


async def drain(launcher: Launcher, broker: MemoryBroker) -> None:
    broker.close_topic("t")
    await asyncio.wait_for(launcher.run(), 30)


async def test_an_error_after_do_task_ends_the_task_as_error_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker()
    publish(broker, "a", "bad", "b")
    run = launcher(broker, BadMeta)
    with caplog.at_level(logging.ERROR, "task.launcher"):
        await drain(run, broker)
    got = done(broker)
    assert (got["a"].result, got["b"].result) == ("complete", "complete")
    assert (got["bad"].result, got["bad"].msg) == ("error", "taskbus could not finish the task: 'rows'")
    assert broker.pending("t") == 0
    assert run.stats()["handler_errors"] == 1
    crash_logs = [r for r in caplog.records if r.exc_info]
    assert len(crash_logs) == 1 and "finishing task bad" in crash_logs[0].getMessage()


async def test_a_message_that_cannot_be_finished_goes_back_then_to_the_dead_letter_topic() -> None:
    broker = MemoryBroker()
    publish(broker, "a", "poison", "b")
    run = launcher(broker, Fine, producer=CrashingProducer(broker), dead_letter_topic="dead")
    await drain(run, broker)
    assert set(done(broker)) == {"a", "b"}
    [letter] = [json.loads(body) for body in broker.bodies("dead")]
    assert letter["attempts"] == POISON_ATTEMPTS and "client bug" in letter["reason"]
    assert json.loads(letter["body"])["id"] == "poison"
    assert broker.pending("t") == 0  # acknowledged once dead-lettered: no endless loop
    assert run.stats()["handler_errors"] == POISON_ATTEMPTS


async def test_an_ack_that_raises_is_counted_and_the_launcher_goes_on() -> None:
    broker = MemoryBroker()
    publish(broker, "a", "ack-bug", "b")
    run = launcher(broker, Fine, consumer=CrashingAck(broker, "t", prefetch=3))
    await drain(run, broker)
    assert set(done(broker)) == {"a", "ack-bug", "b"}
    assert run.stats()["ack_failures"] == 1 and run.stats()["handler_errors"] == 1


async def test_a_worker_that_raises_is_logged_at_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Raises(Worker):
        async def do_task(self, ctx: TaskContext) -> Outcome:
            raise ValueError(f"no such file {self.info}")

    broker = MemoryBroker()
    publish(broker, "x")
    with caplog.at_level(logging.WARNING, "task.launcher"):
        await drain(launcher(broker, Raises), broker)
    assert done(broker)["x"].msg == "no such file x"
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.exc_info and "task x" in record.getMessage()


async def test_a_factory_returning_nothing_usable_ends_each_task_as_error() -> None:
    broker = MemoryBroker()
    publish(broker, "a", "b")
    run = launcher(broker, lambda info: None)  # type: ignore[arg-type,return-value]
    await drain(run, broker)
    assert {t.result for t in done(broker).values()} == {"error"}
    assert "do_task" in done(broker)["a"].msg


async def test_debug_logs_one_line_per_task(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker()
    publish(broker, "a", "b")
    with caplog.at_level(logging.DEBUG, "task.launcher"):
        await drain(launcher(broker, Fine), broker)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("task ")]
    assert len(lines) == 2 and all("type=t result=complete in " in line for line in lines)
