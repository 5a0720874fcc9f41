"""The Launcher keeps every message it holds alive until it is settled, and a stop that has
to give up ends cleanly: the bus redelivers what was not settled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from task import Task, Worker, completed
from task.bus.base import Message
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.errors import BusError
from task.launcher import Launcher, LauncherOptions
from task.result import Outcome
from task.worker import TaskContext


class Fine(Worker):
    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("fine")


class OwnTimeout(Worker):
    async def do_task(self, ctx: TaskContext) -> Outcome:
        raise TimeoutError("connect to db.example timed out")


class Watched:
    """A message that tells the test when its lease is extended."""

    def __init__(self, message: Message, extended: asyncio.Event) -> None:
        self.message, self.extended = message, extended
        self.body, self.attempt = message.body, message.attempt

    async def ack(self) -> None:
        await self.message.ack()

    async def nack(self, delay: float = 0) -> None:
        await self.message.nack(delay)

    async def in_progress(self) -> None:
        self.extended.set()


class WatchedConsumer(MemoryConsumer):
    def __init__(self, broker: MemoryBroker, extended: asyncio.Event) -> None:
        super().__init__(broker, "t", prefetch=1)
        self.extended = extended

    async def msg(self) -> Message | None:
        message = await super().msg()
        return None if message is None else Watched(message, self.extended)


class HeldSend(MemoryProducer):
    """A done-task send that takes as long as the test says (a slow broker, retries)."""

    def __init__(self, broker: MemoryBroker, release: asyncio.Event | None) -> None:
        super().__init__(broker)
        self.release = release

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        if self.release is not None:
            await self.release.wait()
        await super().send(topic, body, key=key)


class Stuck(MemoryConsumer):
    """A consumer whose msg() does not return after stop (the NSQ single-waiter bug)."""

    async def msg(self) -> Message | None:
        message = await super().msg()
        if message is None:
            await asyncio.Event().wait()
        return message


async def test_heartbeats_go_on_while_the_done_task_is_being_sent() -> None:
    # Given a task whose done task takes long to send
    broker = MemoryBroker()
    broker.publish("t", Task.new("t", "x").to_json())
    broker.close_topic("t")
    extended, release = asyncio.Event(), asyncio.Event()
    launcher = Launcher(Fine, WatchedConsumer(broker, extended), HeldSend(broker, release),
                        LauncherOptions(topic="t", heartbeat_interval=0.05))
    running = asyncio.create_task(launcher.run())
    # Then the message's lease is extended while the send waits (the worker has returned)
    await asyncio.wait_for(extended.wait(), 20)
    assert launcher.stats()["tasks_running"] == 0 and len(broker.bodies("done")) == 0
    release.set()
    await asyncio.wait_for(running, 20)
    assert len(broker.bodies("done")) == 1


async def test_a_stop_that_gives_up_returns_cleanly_and_says_how_many(caplog: pytest.LogCaptureFixture) -> None:
    # Given one runner stuck in a consumer that ignores stop, one holding a message whose
    # done task cannot be sent
    broker = MemoryBroker()
    broker.publish("t", Task.new("t", "x").to_json())
    launcher = Launcher(Fine, Stuck(broker, "t", prefetch=2), HeldSend(broker, asyncio.Event()),
                        LauncherOptions(topic="t", max_in_progress=2, worker_kill_time=0.1))
    running = asyncio.create_task(launcher.run())
    while launcher.stats()["tasks_finished"] == 0:
        await asyncio.sleep(0.01)
    # When the launcher is stopped
    with caplog.at_level(logging.ERROR, "task.launcher"):
        await launcher.stop()
        await asyncio.wait_for(running, 30)  # Then run() returns without raising
    assert "giving up on 1 message(s) not settled" in caplog.text
    assert broker.pending("t") == 1  # not acknowledged: the bus delivers it again


@pytest.mark.parametrize("task_timeout", [0.0, 30.0])
async def test_a_workers_own_timeout_error_keeps_its_message(task_timeout: float) -> None:
    broker = MemoryBroker()
    broker.publish("t", Task.new("t", "x").to_json())
    broker.close_topic("t")
    launcher = Launcher(OwnTimeout, MemoryConsumer(broker, "t"), MemoryProducer(broker),
                        LauncherOptions(topic="t", task_timeout=task_timeout))
    await asyncio.wait_for(launcher.run(), 20)
    [done] = [Task.from_json(b) for b in broker.bodies("done")]
    assert (done.result, done.msg) == ("error", "connect to db.example timed out")


async def test_a_failed_start_leaves_no_consumer_open() -> None:
    class Refused(MemoryProducer):
        async def start(self) -> None:
            raise BusError("connection refused")

    class Recording(MemoryConsumer):
        stopped = False

        async def stop(self) -> None:
            Recording.stopped = True
            await super().stop()

    broker = MemoryBroker()
    launcher = Launcher(Fine, Recording(broker, "t"), Refused(broker), LauncherOptions(topic="t"))
    with pytest.raises(BusError):
        await launcher.run()
    assert Recording.stopped
