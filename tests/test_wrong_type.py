"""A task of another type on a worker's topic runs, as in Go, but never silently: a WARNING
(at most one a minute, with the count of the rest) and a counter in ``/stats``."""

from __future__ import annotations

import asyncio
import logging

import pytest

from task import Task, Worker, completed
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.launcher import Launcher, LauncherOptions
from task.log_limit import RateLimitedLog
from task.result import Outcome
from task.worker import TaskContext


class FetchFile(Worker):
    task_type = "fetch-file"

    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("fetched")


async def test_tasks_of_another_type_run_with_one_warning_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    # Given five tasks of type "other" and one "fetch-file" on fetch-file's topic
    broker = MemoryBroker()
    for i in range(5):
        broker.publish("fetch-file", Task.new("other", str(i), id=f"o{i}").to_json())
    broker.publish("fetch-file", Task.new("fetch-file", "x", id="f").to_json())
    broker.close_topic("fetch-file")
    options = LauncherOptions(task_type="fetch-file", topic="fetch-file")
    launcher = Launcher(FetchFile, MemoryConsumer(broker, "fetch-file"), MemoryProducer(broker), options)
    # When the worker drains the topic
    with caplog.at_level(logging.WARNING, "task.launcher"):
        await asyncio.wait_for(launcher.run(), 30)
    # Then every task ran, and the mismatch was said once and counted five times
    assert {Task.from_json(b).result for b in broker.bodies("done")} == {"complete"}
    assert len(broker.bodies("done")) == 6
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "task o0 of type 'other'" in warning and "reject_bad_type or ignore_bad_type" in warning
    assert launcher.stats()["tasks_wrong_type"] == 5


def test_a_flood_is_one_line_a_minute_with_the_count_of_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    say = RateLimitedLog(logging.getLogger("flood"), every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "flood"):
        for second in range(0, 150, 10):  # 15 calls over two and a half minutes
            now[0] = float(second)
            say("mismatch %s", second)
    assert [r.getMessage() for r in caplog.records] == [
        "mismatch 0",
        "mismatch 60 (and 5 more like it since the last report)",
        "mismatch 120 (and 5 more like it since the last report)",
    ]


def test_a_hot_path_that_checks_the_time_itself_gets_the_same_lines(caplog: pytest.LogCaptureFixture) -> None:
    # Given the Launcher's form: compare a clock reading taken anyway with quiet_until, and
    # count what is held back instead of calling
    now = [0.0]
    say = RateLimitedLog(logging.getLogger("flood"), every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "flood"):
        for second in range(0, 150, 10):
            now[0] = float(second)
            if now[0] < say.quiet_until:
                say.hold_back()
            else:
                say("mismatch %s", second)
    # Then the log is the same as when every call goes through
    assert [r.getMessage() for r in caplog.records] == [
        "mismatch 0",
        "mismatch 60 (and 5 more like it since the last report)",
        "mismatch 120 (and 5 more like it since the last report)",
    ]
