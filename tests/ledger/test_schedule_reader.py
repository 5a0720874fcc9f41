"""Listing scheduled tasks without releasing them (what ``taskbus ledger ls`` shows)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.ledger.base import ScheduleReader
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.task import Task

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "sqlite"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryLedger | SqliteLedger:
    if request.param == "memory":
        return MemoryLedger(clock=lambda: NOW)
    return SqliteLedger(str(tmp_path / "l.db"), clock=lambda: NOW)


async def test_scheduled_lists_soonest_first_and_releases_nothing(ledger: MemoryLedger | SqliteLedger) -> None:
    async with ledger:
        assert isinstance(ledger, ScheduleReader)
        for id, delay in (("late", 60), ("soon", 5), ("mid", 30)):
            at = datetime.fromtimestamp(NOW + delay, UTC)
            await ledger.schedule(Task.new("fetch", id, id=id), None, at)
        await ledger.schedule(Task.new("other", "x", id="o"), None, datetime.fromtimestamp(NOW, UTC))
        waiting = await ledger.scheduled("fetch", 2)
        assert [(s.task.id, s.task_list, s.at) for s in waiting] == [
            ("soon", "fetch", NOW + 5), ("mid", "fetch", NOW + 30)]
        assert (await ledger.stats("fetch")).scheduled == 3  # still scheduled, not moved to outstanding
        assert await ledger.find("fetch", "soon") is None
