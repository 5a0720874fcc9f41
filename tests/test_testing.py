"""``task.testing``: a worker class run on given tasks, without a bus, by the real Launcher."""

from __future__ import annotations

import asyncio

import pytest

from task import LauncherOptions, Task, Worker, completed, failed
from task.ledger.memory import MemoryLedger
from task.result import Outcome
from task.testing import run_worker, run_worker_async
from task.worker import TaskContext


class Upper(Worker):
    task_type = "upper"

    def __init__(self, info: str) -> None:
        self.info = info

    async def do_task(self, ctx: TaskContext) -> Outcome:
        if not self.info:
            return failed("nothing to upper-case")
        self.meta["length"] = [str(len(self.info))]
        return completed(self.info.upper())


class Raises(Worker):
    def do_task(self, ctx: TaskContext) -> Outcome:  # a plain def: run in a thread
        raise OSError("disk full")


def test_done_tasks_come_back_in_the_order_given_with_results_and_meta() -> None:
    done = run_worker(Upper, ["abc", "", "de"])
    assert [(d.type, d.info, d.result, d.msg) for d in done] == [
        ("upper", "abc", "complete", "ABC"),
        ("upper", "", "error", "nothing to upper-case"),
        ("upper", "de", "complete", "DE"),
    ]
    assert done[0].get_meta("length") == "3"
    assert all(d.started and d.ended for d in done)


def test_a_worker_that_raises_ends_its_task_as_error_with_the_exception() -> None:
    (done,) = run_worker(Raises, ["x"])
    assert done.type == "test" and done.result == "error" and "disk full" in done.msg


async def test_max_in_progress_runs_tasks_at_once_and_order_still_follows_the_input() -> None:
    together = asyncio.Barrier(3)  # passes only once three tasks run at the same time
    finished: list[str] = []

    class Together(Worker):
        async def do_task(self, ctx: TaskContext) -> Outcome:
            await together.wait()
            if ctx.task.info == "a":
                await asyncio.sleep(0)  # "a" finishes last
            finished.append(ctx.task.info)
            return completed("ok")

    done = await run_worker_async(Together, ["a", "b", "c"], max_in_progress=3, task_type="t")
    assert finished[-1] == "a"
    assert [d.info for d in done] == ["a", "b", "c"]


def test_launcher_options_apply_as_in_a_real_worker() -> None:
    other = Task.new("not-upper", "abc")
    done = run_worker(Upper, [other, "ok"], options=LauncherOptions(reject_bad_type=True))
    assert [d.result for d in done] == ["error", "complete"]
    assert "not-upper" in done[0].msg


async def test_a_ledger_sees_the_tasks_start_and_finish() -> None:
    ledger = MemoryLedger()
    given = Task.new("upper", "abc")
    await ledger.created(given)
    done = await run_worker_async(Upper, [given], ledger=ledger)
    assert done[0].id == given.id
    assert await ledger.find("upper", given.id) is None  # done: no longer outstanding


async def test_the_sync_form_inside_an_event_loop_says_to_await_the_async_one() -> None:
    with pytest.raises(RuntimeError, match="run_worker_async"):
        run_worker(Upper, ["abc"])


def test_max_in_progress_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_in_progress"):
        run_worker(Upper, ["abc"], max_in_progress=0)
