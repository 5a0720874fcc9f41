"""The task store's daily clean-up, on a simulated clock: no waiting, no timing."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from task.errors import LedgerError
from task.flow.retention import Retention
from task.flow.store import Event, TaskEvent, day_span
from task.flow.store_memory import MemoryTaskStore

DAY = 86400.0


class SteppedClock:
    """Simulated time: each ``sleep`` jumps forward at once and is noted; after ``steps``
    sleeps it parks until cancelled, and ``parked`` is set."""

    def __init__(self, start: datetime, steps: int) -> None:
        self.t = start
        self.steps = steps
        self.sleeps: list[float] = []
        self.parked = asyncio.Event()

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if len(self.sleeps) == self.steps:
            self.parked.set()
            await asyncio.Event().wait()
        self.sleeps.append(seconds)
        self.t += timedelta(seconds=seconds)
        await asyncio.sleep(0)


async def days_of_tasks(store: MemoryTaskStore, first: date, count: int) -> None:
    for n in range(count):
        at = day_span(first + timedelta(days=n))[0] + 3600
        await store.record([TaskEvent(f"t{n}", "load", "", Event.CREATED, at)])


async def run_until_parked(retention: Retention, clock: SteppedClock) -> None:
    runner = asyncio.create_task(retention.run())
    await asyncio.wait_for(clock.parked.wait(), 10)
    await retention.stop()
    await asyncio.wait_for(runner, 10)


async def test_cleans_at_start_then_every_day_after_midnight() -> None:
    # Given tasks on each of ten days, 1 to 10 November, and a retention of three days
    store = MemoryTaskStore()
    await days_of_tasks(store, date(2026, 11, 1), 10)
    clock = SteppedClock(datetime(2026, 11, 10, 5, 0, tzinfo=UTC), steps=2)
    retention = Retention(store, keep=3 * DAY, clock=clock, daily_at=600)
    # When flow starts at 05:00 on the 10th and runs two more days
    await run_until_parked(retention, clock)
    # Then at start it kept the 7th to the 10th (the 6th ended more than three days ago),
    # the next day at 00:10 it dropped the 7th, and the day after the 8th
    assert clock.sleeps == [19 * 3600 + 600, DAY]
    assert await store.days() == [date(2026, 11, d) for d in (10, 9)]
    assert retention.removed == 8 and retention.last_error == ""
    assert retention.last_run == datetime(2026, 11, 12, 0, 10, tzinfo=UTC)


async def test_a_failed_clean_up_is_tried_again_later_and_flow_goes_on() -> None:
    # Given a store that is locked at the first clean-up
    store = MemoryTaskStore()
    await days_of_tasks(store, date(2026, 11, 1), 3)
    failures = [LedgerError("ledger sqlite:x is locked by another process")]
    clean = store.clean

    async def flaky(older_than: float) -> int:
        if failures:
            raise failures.pop()
        return await clean(older_than)

    store.clean = flaky  # type: ignore[method-assign]
    clock = SteppedClock(datetime(2026, 11, 10, 5, 0, tzinfo=UTC), steps=1)
    retention = Retention(store, keep=DAY, clock=clock, retry_after=1800)
    # When it runs
    await run_until_parked(retention, clock)
    # Then it waited retry_after, cleaned on the second try, and says the error no more
    assert clock.sleeps == [1800]
    assert await store.days() == [] and retention.removed == 3
    assert retention.last_error == ""


async def test_a_retention_of_zero_keeps_everything() -> None:
    store = MemoryTaskStore()
    await days_of_tasks(store, date(2020, 1, 1), 2)
    clock = SteppedClock(datetime(2026, 11, 10, tzinfo=UTC), steps=0)
    await asyncio.wait_for(Retention(store, keep=0, clock=clock).run(), 10)
    assert len(await store.days()) == 2 and clock.sleeps == []


async def test_a_retention_stopped_before_it_runs_does_nothing() -> None:
    store = MemoryTaskStore()
    clock = SteppedClock(datetime(2026, 11, 10, tzinfo=UTC), steps=5)
    retention = Retention(store, keep=DAY, clock=clock)
    await retention.stop()
    await retention.stop()
    await asyncio.wait_for(retention.run(), 10)
    assert clock.sleeps == []
