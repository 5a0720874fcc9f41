"""Priorities (``--topic high,default,low``) and broadcast tasks (``--scope all``), written
once and run against each bus.

Subclass ``ModesContract`` in ``tests/test_modes*.py`` and set ``self.url`` (what workers
consume and produce with; the file bus needs ``?follow=1`` for broadcast, which is on by
default) in an autouse fixture. Each test uses topics of its own, so the suites can share one server. The workers
are real Launchers built by ``Launcher.from_settings``, as ``taskbus worker`` builds them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest

from task import Worker, completed
from task.bus.base import Consumer, Message
from task.bus.broadcast import BroadcastConsumer, broadcast_topic
from task.bus.priority import PriorityConsumer
from task.bus.registry import open_consumer, open_producer
from task.client import Client
from task.launcher import Launcher
from task.result import Outcome
from task.settings import WorkerSettings
from task.task import Task
from task.worker import TaskContext

#: tasks per topic in the priority backlog
PER_TOPIC = 4


def recording_worker(started: list[str]) -> type[Worker]:
    """A worker class that appends each task's info to ``started`` as it starts it."""

    class Recorder(Worker):
        def __init__(self, info: str) -> None:
            self.info = info

        async def do_task(self, ctx: TaskContext) -> Outcome:
            started.append(self.info)
            return completed("did %s", self.info)

    return Recorder


class ModesContract:
    url: str
    #: seconds to wait for what should come
    patience: ClassVar[float] = 30.0
    #: seconds PriorityConsumer gives a higher topic's fetch (the bus's round trip)
    grace: ClassVar[float] = 0.25
    #: whether one topic's messages arrive in the order sent (Kafka: only per partition)
    ordered: ClassVar[bool] = True
    #: whether a message given back is done once more only (Kafka: at least once; the file
    #: bus: every reader reads every line, so it is not in the handover test)
    exactly_once: ClassVar[bool] = True
    shares_topic: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _topics(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.type = "modes-" + suffix
        self.done_topic = "done-" + suffix

    def settings(self, **values: object) -> WorkerSettings:
        base: dict[str, object] = {
            "worker": "unused", "type": self.type, "bus": self.url, "done_topic": self.done_topic,
            "worker_kill_time": 2.0,
        }
        base.update(values)
        return WorkerSettings.model_validate(base)

    def follower(self, topic: str) -> Consumer:
        """A reader of ``topic`` that sees everything sent from its start (done tasks)."""
        from task.done_follower import open_done_follower

        return open_done_follower(self.url, topic=topic)

    def backlog(self, prefix: str, count: int) -> list[Task]:
        """``count`` tasks with infos ``<prefix>-0``, ``<prefix>-1``... for one topic."""
        return [Task.new(self.type, f"{prefix}-{i}") for i in range(count)]

    async def send(self, topic: str, *tasks: Task) -> None:
        async with open_producer(self.url) as producer:
            for task in tasks:
                await producer.send(topic, task.to_json(), key=task.id)

    @asynccontextmanager
    async def running(self, launcher: Launcher) -> AsyncIterator[asyncio.Task[None]]:
        """``launcher`` running until the block ends; its consumers subscribed first."""
        await launcher.consumer.start()
        if launcher.broadcast is not None:
            await launcher.broadcast.start()
        run = asyncio.create_task(launcher.run())
        try:
            yield run
        finally:
            await launcher.stop()
            await asyncio.wait_for(run, self.patience)

    # ------------------------------------------------------------------ priorities

    async def test_no_low_task_starts_while_a_high_one_waits(self) -> None:
        # Given a backlog of PER_TOPIC tasks on each of high, default and low
        topics = [f"{self.type}-{name}" for name in ("high", "default", "low")]
        started: list[str] = []
        settings = self.settings(topic=",".join(topics), max_in_progress=1, lifetime=3 * PER_TOPIC)
        launcher = Launcher.from_settings(recording_worker(started), settings)
        consumer = launcher.consumer
        assert isinstance(consumer, PriorityConsumer)
        consumer.grace = self.grace
        await consumer.start()  # subscribed first: core NATS keeps nothing for absent subscribers
        for name, topic in zip(("high", "default", "low"), topics, strict=True):
            await self.send(topic, *(Task.new(self.type, f"{name}-{i}") for i in range(PER_TOPIC)))
        # When one worker (max_in_progress 1) works through all of it
        async with self.running(launcher) as run:
            await asyncio.wait_for(asyncio.shield(run), self.patience)
        # Then it started every high task before any default one, every default before any low
        ranks = [("high", "default", "low").index(info.partition("-")[0]) for info in started]
        assert len(started) == 3 * PER_TOPIC, started
        assert ranks == sorted(ranks), started
        # And the order within a topic is kept where the bus keeps it (not across partitions)
        if self.ordered:
            assert [s for s in started if s.startswith("high")] == [f"high-{i}" for i in range(PER_TOPIC)]

    async def test_a_high_task_sent_during_low_work_goes_next(self) -> None:
        # Given a worker busy with a backlog of low tasks, one at a time
        high, low = f"{self.type}-high", f"{self.type}-low"
        started: list[str] = []
        gate = asyncio.Event()

        class Slow(Worker):
            def __init__(self, info: str) -> None:
                self.info = info

            async def do_task(self, ctx: TaskContext) -> Outcome:
                started.append(self.info)
                if len(started) == 1:
                    await gate.wait()
                return completed("did %s", self.info)

        settings = self.settings(topic=f"{high},{low}", max_in_progress=1, lifetime=5)
        launcher = Launcher.from_settings(Slow, settings)
        assert isinstance(launcher.consumer, PriorityConsumer)
        launcher.consumer.grace = self.grace
        await launcher.consumer.start()
        await self.send(low, *(Task.new(self.type, f"low-{i}") for i in range(4)))
        async with self.running(launcher) as run:
            while not started:
                await asyncio.sleep(0.01)
            # When a high task arrives while the first low one runs
            await self.send(high, Task.new(self.type, "high-0"))
            await self._until_held(launcher.consumer, 0)
            gate.set()
            await asyncio.wait_for(asyncio.shield(run), self.patience)
        # Then it is the very next task started: the low tasks already fetched wait
        assert started[0].startswith("low") and started[1] == "high-0", started

    async def test_a_stopping_worker_gives_back_what_it_held_unstarted(self) -> None:
        if not self.shares_topic:
            pytest.skip("every reader of a file reads every line: there is no handover")
        # Given worker A holding a backlog of low tasks (one started, more held), and worker
        # B subscribed to the same topics
        high, low = f"{self.type}-high", f"{self.type}-low"
        started_a: list[str] = []
        started_b: list[str] = []
        a = Launcher.from_settings(recording_worker(started_a),
                                   self.settings(topic=f"{high},{low}", lifetime=1))
        await a.consumer.start()
        await self.send(low, *self.backlog("low", 4))
        b = Launcher.from_settings(recording_worker(started_b), self.settings(topic=f"{high},{low}"))
        await b.consumer.start()
        # When A stops after one task
        async with self.running(a) as run:
            await asyncio.wait_for(asyncio.shield(run), self.patience)
        assert len(started_a) == 1
        # Then B does every other task: nothing A held is lost
        async def all_done() -> None:
            while len(set(started_a + started_b)) < 4:
                await asyncio.sleep(0.02)

        async with self.running(b):
            await asyncio.wait_for(all_done(), self.patience)
        assert sorted(set(started_a + started_b)) == [f"low-{i}" for i in range(4)]
        if self.exactly_once:
            assert len(started_a + started_b) == 4

    async def _until_held(self, consumer: PriorityConsumer, lane: int) -> None:
        """Wait until ``consumer`` holds a message of topic ``lane`` ready to hand out."""
        async def held() -> None:
            while True:
                if consumer._lanes[lane].ready() is not None:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(held(), self.patience)

    # ------------------------------------------------------------------- broadcast

    async def test_every_running_worker_does_a_broadcast_task_once(self) -> None:
        # Given three workers of one type started without any broadcast flag, one started
        # with --no-broadcast, and a reader of the done topic
        started: list[str] = []
        launchers = [self.broadcast_worker(started, f"w{i}") for i in range(3)]
        quiet_started: list[str] = []
        quiet = Launcher.from_settings(recording_worker(quiet_started),
                                       self.settings(broadcast=False, instance="quiet"))
        assert quiet.broadcast is None
        done = self.follower(self.done_topic)
        await done.start()
        async with self.running(launchers[0]), self.running(launchers[1]), self.running(launchers[2]), \
                self.running(quiet):
            # When one broadcast task is sent to <type>.all
            first = Task.new(self.type, "reload-1", meta={"scope": "all"})
            await self.send(broadcast_topic(self.type), first)
            got = await self._take(done, 3)
            # And a fourth worker starts after that send, before a second broadcast task
            late_started: list[str] = []
            async with self.running(self.broadcast_worker(late_started, "late")):
                second = Task.new(self.type, "reload-2", meta={"scope": "all"})
                await self.send(broadcast_topic(self.type), second)
                got += await self._take(done, 4)
                # and an ordinary task goes to the workers as always
                await self.send(self.type, Task.new(self.type, "ordinary"))
                got += await self._take(done, 1)
        await done.stop()
        # Then each of the three did the first once, each sending its own done task
        runs = [t for t in got if t.id == first.id]
        assert sorted(t.get_meta("instance") for t in runs) == ["w0", "w1", "w2"]
        assert all(t.result == "complete" and t.get_meta("scope") == "all" for t in runs)
        # (a second run of the first would have come before the second on the same reader)
        assert started.count("reload-1") == 3 and started.count("reload-2") == 3
        # And the late worker did only the second: it was not running when the first was sent
        assert [s for s in late_started if s.startswith("reload")] == ["reload-2"]
        # And the --no-broadcast worker did neither
        assert not [s for s in quiet_started if s.startswith("reload")]
        assert sorted(t.get_meta("instance") for t in got if t.id == second.id) == ["late", "w0", "w1", "w2"]
        # And an ordinary task is no broadcast: no instance in its done task (on the file
        # bus every reader of a file reads every line, so the other workers may do it too)
        assert [t.get_meta("instance") for t in got if t.info == "ordinary"] == [""]

    async def test_the_client_waits_for_every_instance_of_a_broadcast(self) -> None:
        # Given three workers of one type with --broadcast
        started: list[str] = []
        launchers = [self.broadcast_worker(started, f"w{i}") for i in range(3)]
        async with Client(self.url, done_topic=self.done_topic) as client, \
                self.running(launchers[0]), self.running(launchers[1]), self.running(launchers[2]):
            # When the client sends a task with scope="all"
            sent = await client.send(self.type, "reload", scope="all")
            # Then wait_all returns one done task per worker, each naming its instance
            runs = await client.wait_all(sent.id, timeout=self.patience, count=3)
        assert sorted(t.get_meta("instance") for t in runs) == ["w0", "w1", "w2"]
        assert all(t.id == sent.id and t.result == "complete" for t in runs)
        assert started.count("reload") == 3

    def broadcast_worker(self, started: list[str], instance: str) -> Launcher:
        """A worker as ``taskbus worker`` builds it with no broadcast flag: broadcast is on by
        default, on a reader of its own; the worker reads its topic from the bus's own
        consumer, not wrapped for it."""
        launcher = Launcher.from_settings(recording_worker(started), self.settings(instance=instance))
        plain = open_consumer(self.url, topic=self.type, channel=self.type, prefetch=1)
        assert type(launcher.consumer) is type(plain) and not isinstance(launcher.consumer, PriorityConsumer)
        assert isinstance(launcher.broadcast, BroadcastConsumer)
        return launcher

    async def _take(self, consumer: Consumer, n: int) -> list[Task]:
        """The next ``n`` tasks ``consumer`` delivers."""
        got: list[Task] = []

        async def take() -> None:
            while len(got) < n:
                message: Message | None = await consumer.msg()
                if message is None:
                    return
                got.append(Task.from_json(message.body))
                await message.ack()

        await asyncio.wait_for(take(), self.patience)
        return got


__all__ = ["PER_TOPIC", "ModesContract", "recording_worker"]
