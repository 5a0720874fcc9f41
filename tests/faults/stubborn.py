"""A worker that ignores shutdown: it sleeps the seconds in its info whatever happens, so the
Launcher has to cancel it after ``worker_kill_time`` (``taskbus worker tests.faults.stubborn:Stubborn``)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from task.result import Outcome, completed
from task.worker import TaskContext, Worker


class Stubborn(Worker):
    task_type: ClassVar[str] = "stubborn"

    async def do_task(self, ctx: TaskContext) -> Outcome:
        await asyncio.sleep(float(ctx.task.info or 0))
        return completed("slept %ss", ctx.task.info)
