"""The built-in ``nop`` worker: does nothing, optionally slowly or unreliably.

For tests, demos and benchmarks. Options come from the task's info as a query string,
``sleep=250ms&fail=0.1`` (sleep before finishing; fail that fraction of tasks), so one
worker process can be driven by the taskmaster; ``make_nop(sleep=, fail_rate=)`` sets
defaults for a whole run.
"""

from __future__ import annotations

import asyncio
import random
from typing import ClassVar

from task.duration import parse_duration
from task.errors import ConfigError
from task.meta import parse_query
from task.result import Outcome, completed, failed, interrupted
from task.worker import MakeWorker, TaskContext, Worker

__all__ = ["NopWorker", "make_nop"]


class NopWorker(Worker):
    """Completes every task; ``sleep`` and ``fail`` in the info (or the defaults) change that."""

    task_type: ClassVar[str] = "nop"
    default_sleep: ClassVar[float] = 0.0
    default_fail_rate: ClassVar[float] = 0.0

    #: this task's values; the class defaults unless the info sets them (no per-task copy:
    #: the benchmarks measure this worker, so it costs no more than a user's would)
    sleep: float = 0.0
    fail_rate: float = 0.0

    def __init__(self, info: str) -> None:
        self.info = info
        if "=" in info:
            options = parse_query(info.partition("?")[2] or info)
            if "sleep" in options:
                self.sleep = parse_duration(options["sleep"][0], "nop sleep")
            if "fail" in options:
                try:
                    self.fail_rate = float(options["fail"][0])
                except ValueError:
                    raise ConfigError(f"nop fail={options['fail'][0]!r} is not a fraction like 0.1") from None

    async def do_task(self, ctx: TaskContext) -> Outcome:
        if self.sleep > 0:
            stop = asyncio.ensure_future(ctx.wait_stopping())
            try:
                await asyncio.wait({stop}, timeout=self.sleep)
            finally:
                stop.cancel()
            if ctx.stopping:
                return interrupted()
        if self.fail_rate and random.random() < self.fail_rate:
            return failed("nop failed on purpose (fail=%g)", self.fail_rate)
        return _COMPLETED


_COMPLETED = completed()


def make_nop(sleep: float = 0.0, fail_rate: float = 0.0) -> MakeWorker:
    """A nop worker class with these defaults."""
    return type("NopWorker", (NopWorker,), {
        "default_sleep": sleep, "default_fail_rate": fail_rate, "sleep": sleep, "fail_rate": fail_rate,
    })
