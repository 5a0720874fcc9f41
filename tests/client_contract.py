"""What ``task.Client`` owes its users, written once and run against each bus.

Subclass ``ClientContract`` in ``tests/test_client*.py`` and set ``self.url`` (what the
client gets) and ``self.worker_url`` (what a worker consumes with; the file bus needs
``?follow=1`` there) in an autouse fixture. Each test uses topics of its own, so the
suites can share one server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest

from task import Client, Worker, completed
from task.bus.base import Consumer
from task.bus.registry import open_consumer, open_producer
from task.launcher import Launcher, LauncherOptions
from task.result import Outcome
from task.task import Task
from task.worker import TaskContext


class Echo(Worker):
    """Completes at once, saying what it did: the fastest worker there is."""

    task_type = "echo"

    def __init__(self, info: str) -> None:
        self.info = info

    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("did %s", self.info)


class ClientContract:
    url: str
    worker_url: str
    #: seconds to wait for a done task that should come
    patience: ClassVar[float] = 20.0
    #: the bus may be used from two event loops at once (not the memory bus, which is one
    #: loop's objects)
    crosses_loops: ClassVar[bool] = True

    @pytest.fixture(autouse=True)
    def _topics(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.type = "echo-" + suffix
        self.done_topic = "done-" + suffix

    def client(self) -> Client:
        return Client(self.url, done_topic=self.done_topic)

    def worker_consumer(self) -> Consumer:
        """What the worker consumes ``self.type`` with."""
        return open_consumer(self.worker_url, topic=self.type, channel=self.type)

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[Launcher]:
        """An Echo worker running on ``self.type`` until the block ends (started: subscribed)."""
        consumer = self.worker_consumer()
        options = LauncherOptions(task_type=self.type, done_topic=self.done_topic, worker_kill_time=2.0)
        launcher = Launcher(Echo, consumer, open_producer(self.worker_url), options)
        await consumer.start()  # the launcher's start() is idempotent: subscribed before any send
        running = asyncio.create_task(launcher.run())
        try:
            yield launcher
        finally:
            await launcher.stop()
            await asyncio.wait_for(running, 30)

    # ---------------------------------------------------------------- the tests

    async def test_send_then_wait_gives_the_done_task(self) -> None:
        async with self.worker(), self.client() as client:
            sent = await client.send(self.type, "a file", job="daily", meta={"k": "v"})
            done = await client.wait(sent.id, timeout=self.patience)
        assert (done.id, done.type, done.info, done.job) == (sent.id, self.type, "a file", "daily")
        assert done.result == "complete" and done.msg == "did a file"
        assert done.get_meta("k") == "v"

    async def test_a_fast_workers_done_task_is_not_missed(self) -> None:
        # Given a worker already running and a client following its own done tasks
        async with self.worker(), self.client() as client:
            follow = client.done(type=self.type)
            # When the task is sent and its done task has arrived before wait is called
            sent = await client.send(self.type, "quick")
            arrived = await asyncio.wait_for(anext(follow), self.patience)
            assert arrived.id == sent.id
            # Then wait still returns it, at once
            done = await client.wait(sent.id, timeout=0)
            await follow.aclose()
        assert done.id == sent.id and done.result == "complete"

    async def test_several_concurrent_waits_each_get_their_task(self) -> None:
        async with self.worker(), self.client() as client:
            ids = [f"{self.type}-{i}" for i in range(5)]
            waits = [asyncio.ensure_future(client.wait(i, timeout=self.patience)) for i in ids]
            twice = asyncio.ensure_future(client.wait(ids[0], timeout=self.patience))
            for i in ids:
                await client.send(self.type, i, id=i)
            done = await asyncio.gather(*waits, twice)
        assert [d.id for d in done] == [*ids, ids[0]]
        assert [d.msg for d in done] == [f"did {i}" for i in ids] + [f"did {ids[0]}"]

    async def test_done_follows_by_type_and_job(self) -> None:
        async with self.worker(), self.client() as client:
            follow = client.done(type=self.type, job="wanted")
            await client.send(self.type, "skip me", job="other")
            wanted = await client.send(self.type, "take me", job="wanted")
            got = await asyncio.wait_for(anext(follow), self.patience)
            await follow.aclose()
        assert got.id == wanted.id and got.job == "wanted"

    async def test_the_client_takes_no_done_task_from_other_readers(self) -> None:
        # Given another reader of the done topic (a recap, say), subscribed before the send
        reader = open_consumer(self.url, topic=self.done_topic, channel="recap")
        async with reader, self.worker(), self.client() as client:
            sent = await client.send(self.type, "shared")
            await client.wait(sent.id, timeout=self.patience)
            # Then that reader gets the done task too
            message = await asyncio.wait_for(reader.msg(), self.patience)
            assert message is not None
            await message.ack()
        assert Task.from_json(message.body).id == sent.id

    async def test_the_sync_client_sends_and_waits(self) -> None:
        if not self.crosses_loops:
            pytest.skip("this bus lives in one event loop; the sync client runs its own")
        async with self.worker():
            with Client.sync(self.url, done_topic=self.done_topic) as client:
                follow = client.done(type=self.type)
                sent = await asyncio.to_thread(client.send, self.type, "from a script")
                done = await asyncio.to_thread(client.wait, sent.id, self.patience)
                followed = await asyncio.to_thread(next, follow)
                follow.close()
        assert done.id == sent.id and done.msg == "did from a script"
        assert followed.id == sent.id
