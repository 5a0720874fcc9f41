"""Listing scheduled tasks without releasing them (what ``taskbus ledger ls`` shows)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.ledger.base import ScheduledTask, ScheduleKind, ScheduleReader
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.task import Task

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryLedger | SqliteLedger:
    if request.param == "memory":
        return MemoryLedger(clock=lambda: NOW)
    return SqliteLedger(str(tmp_path / "l.db"), clock=lambda: NOW)


def at(delay: float) -> datetime:
    return datetime.fromtimestamp(NOW + delay, UTC)


async def test_scheduled_lists_soonest_first_and_releases_nothing(ledger: MemoryLedger | SqliteLedger) -> None:
    async with ledger:
        assert isinstance(ledger, ScheduleReader)
        for id, delay in (("late", 60), ("soon", 5), ("mid", 30)):
            await ledger.schedule(Task.new("fetch", id, id=id), None, at(delay),
                                  topic="fetch", kind=ScheduleKind.RETRY)
        await ledger.schedule(Task.new("other", "x", id="o"), None, at(0),
                              topic="other", kind=ScheduleKind.RETRY)
        waiting = await ledger.scheduled("fetch", 2)
        assert [(s.task.id, s.task_list, s.at) for s in waiting] == [
            ("soon", "fetch", NOW + 5), ("mid", "fetch", NOW + 30)]
        assert (await ledger.stats("fetch")).scheduled == 3  # still scheduled, not moved to outstanding
        assert await ledger.find("fetch", "soon") is None


async def test_scheduled_and_find_scheduled_say_where_and_why(ledger: MemoryLedger | SqliteLedger) -> None:
    async with ledger:
        # Given a delayed task bound for another topic than its type
        task = Task.new("fetch", "x", id="d1")
        await ledger.schedule(task, "delays", at(90), topic="fetch-slow", kind=ScheduleKind.DELAY)
        expected = ScheduledTask(task, "delays", NOW + 90, "fetch-slow", ScheduleKind.DELAY)
        # Then listing and looking it up show its topic and kind, and release nothing
        assert await ledger.scheduled("delays", 10) == [expected]
        assert await ledger.find_scheduled("delays", "d1") == expected
        assert await ledger.find_scheduled("delays", "nope") is None
        assert await ledger.find_scheduled("fetch", "d1") is None  # another task list
        assert (await ledger.stats("delays")).scheduled == 1
