"""The context a worker gets is a full ``TaskContext`` while the Launcher keeps its own
bookkeeping on the same object (one object per message on the hot path)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.launcher import Launcher, LauncherOptions
from task.result import Outcome, interrupted
from task.task import Task
from task.worker import TaskContext, Worker


class WaitsForStop(Worker):
    seen: ClassVar[list[object]] = []
    started: ClassVar[asyncio.Event] = asyncio.Event()

    async def do_task(self, ctx: TaskContext) -> Outcome:
        for name in TaskContext.__slots__:  # every attribute TaskContext's own methods read
            getattr(ctx, name)
        WaitsForStop.seen.append((isinstance(ctx, TaskContext), ctx.task.info, ctx.stopping))
        WaitsForStop.started.set()
        await ctx.wait_stopping()
        WaitsForStop.seen.append(ctx.stopping)
        return interrupted()


async def test_the_context_says_stopping_once_the_launcher_stops() -> None:
    # Given a worker that waits on its context until it is told to stop
    broker = MemoryBroker()
    broker.publish("t", Task.new("t", "job-1").to_json())
    WaitsForStop.seen, WaitsForStop.started = [], asyncio.Event()
    launcher = Launcher(WaitsForStop, MemoryConsumer(broker, "t"), MemoryProducer(broker),
                        LauncherOptions(topic="t", worker_kill_time=30))
    running = asyncio.create_task(launcher.run())
    await asyncio.wait_for(WaitsForStop.started.wait(), 30)
    # When the launcher stops
    await launcher.stop()
    await asyncio.wait_for(running, 30)
    # Then the worker saw a TaskContext with its task, not stopping, then stopping, and its
    # done task says how it ended
    assert WaitsForStop.seen == [(True, "job-1", False), True]
    [done] = [Task.from_json(body) for body in broker.bodies("done")]
    assert (done.result, done.msg) == ("error", "task interrupted")
