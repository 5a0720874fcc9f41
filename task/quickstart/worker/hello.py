"""A worker: says hello to whoever the task's info names.

Run it:   taskbus worker task.quickstart.worker.hello:Hello
Feed it:  taskbus send hello "Ada Lovelace"
"""

from __future__ import annotations

import asyncio

from task import Worker, completed, failed, interrupted
from task.worker import TaskContext


class Hello(Worker):
    task_type = "hello"  # the tasks this worker does; also its topic by default

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        name = self.info.strip()  # the task's info, as the taskmaster wrote it
        if not name:
            return failed("nobody to greet: the info is empty")
        await asyncio.sleep(0.05)  # pretend to work; a real worker fetches, copies, computes
        if ctx.stopping:  # the launcher is shutting down: stop early, the task ends as error
            return interrupted()
        self.meta["letters"] = [str(len(name))]  # added to the done task's meta
        return completed("said hello to %s", name)
