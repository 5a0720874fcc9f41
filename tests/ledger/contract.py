"""The behaviour every ledger owes its users, written once and run against each backend.

Subclass ``LedgerContract`` in ``tests/ledger/test_<backend>.py`` and implement
``make_ledger(clock)``; the ``ledger`` fixture closes what it built. Time is the injected
``clock``: tests move it instead of sleeping. Every test uses its own task type, so backends
that keep data between tests (a Cassandra keyspace) need no cleanup.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from task.ledger.base import (
    Ledger,
    LedgerRecord,
    ScheduleCanceller,
    ScheduledTask,
    ScheduleKind,
    State,
)
from task.task import Task


class Clock:
    """Unix seconds the test moves by hand, starting at the real time (TTLs stay sensible)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def at(self, offset: float = 0) -> datetime:
        return datetime.fromtimestamp(self.now + offset, UTC)


async def collect(records: AsyncIterator[LedgerRecord]) -> list[str]:
    return [record.task.id async for record in records]


def ids(entries: list[ScheduledTask]) -> list[str]:
    return [entry.task.id for entry in entries]


class LedgerContract:
    def make_ledger(self, clock: Clock) -> Ledger:
        raise NotImplementedError

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def ledger(self, clock: Clock) -> AsyncIterator[Ledger]:
        ledger = self.make_ledger(clock)
        try:
            yield ledger
        finally:
            await ledger.close()

    @pytest.fixture
    def kind(self) -> str:
        return "k" + uuid.uuid4().hex[:10]

    def task(self, kind: str, id: str | None = None, info: str = "i") -> Task:
        return Task.new(kind, info, id=id or uuid.uuid4().hex)

    async def test_created_records_once(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        task = self.task(kind, info="é 日本 \u2028 a&b")
        task.set_meta("k", "v1", "v2")
        assert await ledger.created(task) is True
        clock.advance(5)
        assert await ledger.created(task) is False
        record = await ledger.find(kind, task.id)
        assert record is not None
        assert record.task == task and record.task_list == kind
        assert record.state is State.CREATED and record.attempts == 0
        assert record.created_at == record.updated_at == clock.now - 5

    async def test_started_moves_a_created_record(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        task = self.task(kind)
        await ledger.created(task)
        clock.advance(3)
        await ledger.started(task)
        await ledger.started(task)
        record = await ledger.find(kind, task.id)
        assert record is not None and record.state is State.STARTED
        assert (record.created_at, record.updated_at) == (clock.now - 3, clock.now)

    async def test_started_creates_a_missing_record(self, ledger: Ledger, kind: str) -> None:
        task = self.task(kind)
        await ledger.started(task, "elsewhere-" + kind)
        assert await ledger.find(kind, task.id) is None
        record = await ledger.find("elsewhere-" + kind, task.id)
        assert record is not None and record.state is State.STARTED

    async def test_touch_refreshes_and_ignores_unknown(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        task = self.task(kind)
        await ledger.started(task)
        clock.advance(7)
        await ledger.touch(kind, task.id)
        await ledger.touch(kind, "no-such-id")
        record = await ledger.find(kind, task.id)
        assert record is not None and record.updated_at == clock.now
        assert await ledger.find(kind, "no-such-id") is None

    async def test_done_forgets_and_is_idempotent(self, ledger: Ledger, kind: str) -> None:
        task, other = self.task(kind), self.task(kind)
        await ledger.created(task)
        await ledger.created(other)
        await ledger.done(kind, task.id)
        await ledger.done(kind, task.id)
        await ledger.done(kind, "never-recorded")
        assert await ledger.find(kind, task.id) is None
        assert await ledger.find(kind, other.id) is not None

    async def test_task_without_id_is_counted_not_recorded(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        task = Task.new(kind, "no id", id="")
        assert await ledger.created(task) is False
        await ledger.started(task)
        await ledger.schedule(task, None, clock.at(-1), topic=kind, kind=ScheduleKind.RETRY)
        assert ledger.skipped_no_id == 3  # type: ignore[attr-defined]  # not in the protocol
        assert await ledger.due(kind, clock.at()) == []
        assert await collect(ledger.outstanding(kind, 0)) == []
        assert kind not in await ledger.task_lists()

    async def test_outstanding_is_oldest_first_by_last_write(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        # Given a created at 0, b created at 10, a touched at 20, c at 25 in another list
        a, b, c = self.task(kind, "a"), self.task(kind, "b"), self.task(kind + "x", "c")
        await ledger.created(a)
        clock.advance(10)
        await ledger.created(b)
        clock.advance(10)
        await ledger.started(a)
        clock.advance(5)
        await ledger.created(c)
        clock.advance(5)
        # When asked at 30 for records idle for 5, 15 and 100 seconds
        # Then b (idle 20) comes before a (idle 10), and c's list is not mixed in
        assert await collect(ledger.outstanding(kind, 5)) == ["b", "a"]
        assert await collect(ledger.outstanding(kind, 15)) == ["b"]
        assert await collect(ledger.outstanding(kind, 100)) == []
        assert await collect(ledger.outstanding(kind, 0)) == ["b", "a"]

    async def test_claim_race_has_one_winner(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        task = self.task(kind)
        await ledger.created(task)
        clock.advance(60)
        won = await asyncio.gather(
            *(ledger.claim(kind, task.id, f"r{i}", 30, older_than=60) for i in range(2)))
        assert sorted(won) == [False, True]
        record = await ledger.find(kind, task.id)
        assert record is not None
        assert record.attempts == 1 and record.owner == f"r{won.index(True)}"
        assert record.updated_at == clock.now  # so it is not outstanding again at once
        assert await collect(ledger.outstanding(kind, 10)) == []
        # the claim blocks everyone, its holder too, until its ttl passes
        clock.advance(29)
        assert await ledger.claim(kind, task.id, record.owner, 30, older_than=0) is False
        clock.advance(2)
        assert await ledger.claim(kind, task.id, "r9", 30, older_than=30) is True
        record = await ledger.find(kind, task.id)
        assert record is not None and (record.attempts, record.owner) == (2, "r9")

    async def test_claim_fails_when_the_record_came_alive_after_it_was_listed(
        self, ledger: Ledger, clock: Clock, kind: str
    ) -> None:
        # Given two tasks idle for 60 s, listed as lost by a recover pass (threshold 30 s)
        touched, restarted = self.task(kind, "touched"), self.task(kind, "restarted")
        await ledger.started(touched)
        await ledger.created(restarted)
        clock.advance(60)
        listed = [record async for record in ledger.outstanding(kind, 30)]
        assert sorted(r.task.id for r in listed) == ["restarted", "touched"]
        # When their workers show signs of life before the claim (a heartbeat, a start)
        await ledger.touch(kind, "touched")
        await ledger.started(restarted)
        clock.advance(1)
        # Then neither is claimed, so neither is resent, and no attempt is counted
        for record in listed:
            assert await ledger.claim(kind, record.task.id, "r", 30, older_than=30) is False
            found = await ledger.find(kind, record.task.id)
            assert found is not None and (found.attempts, found.owner) == (0, "")
        # And once idle for the threshold again, the claim succeeds
        clock.advance(29)
        assert await ledger.claim(kind, "touched", "r", 30, older_than=30) is True

    async def test_claim_of_unknown_or_done_task_fails(self, ledger: Ledger, kind: str) -> None:
        task = self.task(kind)
        assert await ledger.claim(kind, task.id, "r", 30, older_than=0) is False
        await ledger.created(task)
        await ledger.done(kind, task.id)
        assert await ledger.claim(kind, task.id, "r", 30, older_than=0) is False

    async def test_schedule_and_due_move_tasks_to_created(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        later, sooner = self.task(kind, "later"), self.task(kind, "sooner")
        await ledger.schedule(later, None, clock.at(60), topic="retry-topic", kind=ScheduleKind.RETRY)
        await ledger.schedule(sooner, kind, clock.at(30), topic=kind, kind=ScheduleKind.RETRY)
        assert (await ledger.stats(kind)).scheduled == 2
        assert kind in await ledger.task_lists()
        assert await ledger.due(kind, clock.at(10)) == []
        assert await ledger.find(kind, "sooner") is None
        clock.advance(45)
        assert await ledger.due(kind, clock.at()) == [
            ScheduledTask(sooner, kind, clock.now - 15, kind, ScheduleKind.RETRY)]
        record = await ledger.find(kind, "sooner")
        assert record is not None and record.state is State.CREATED
        assert record.updated_at == clock.now
        assert await ledger.due(kind, clock.at()) == []
        assert await ledger.due(kind, clock.at(100)) == [
            ScheduledTask(later, kind, clock.now + 15, "retry-topic", ScheduleKind.RETRY)]
        assert (await ledger.stats(kind)).scheduled == 0

    async def test_due_releases_only_the_kind_asked_for(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        # Given a retry, a delayed task and a workflow step of one task list, all due, and a
        # retry not due yet, each bound for its own topic
        for id, at, sk in (("r1", -30, ScheduleKind.RETRY), ("d1", -20, ScheduleKind.DELAY),
                           ("f1", -10, ScheduleKind.FLOW), ("r2", 100, ScheduleKind.RETRY)):
            await ledger.schedule(self.task(kind, id), None, clock.at(at), topic=f"to-{id}", kind=sk)
        # When the retry app asks for due retries, it gets only the retry, with its topic
        retries = await ledger.due(kind, clock.at(), kind=ScheduleKind.RETRY)
        assert [(e.task.id, e.topic, e.kind) for e in retries] == [("r1", "to-r1", ScheduleKind.RETRY)]
        # Then the delayed task and the step stay scheduled for their own apps
        assert (await ledger.stats(kind)).scheduled == 3
        assert await ledger.find(kind, "d1") is None
        assert ids(await ledger.due(kind, clock.at(), kind=ScheduleKind.DELAY)) == ["d1"]
        assert ids(await ledger.due(kind, clock.at(), kind=ScheduleKind.RETRY)) == []
        # And without a kind, every kind that is due is released
        every = await ledger.due(kind, clock.at(200))
        assert [(e.task.id, e.topic, e.kind) for e in every] == [
            ("f1", "to-f1", ScheduleKind.FLOW), ("r2", "to-r2", ScheduleKind.RETRY)]

    async def test_scheduling_again_moves_the_time(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        task = self.task(kind)
        await ledger.schedule(task, None, clock.at(600), topic="first", kind=ScheduleKind.RETRY)
        await ledger.schedule(task, None, clock.at(10), topic="second", kind=ScheduleKind.DELAY)
        assert await ledger.due(kind, clock.at(20), kind=ScheduleKind.RETRY) == []
        assert await ledger.due(kind, clock.at(20)) == [
            ScheduledTask(task, kind, clock.now + 10, "second", ScheduleKind.DELAY)]
        assert await ledger.due(kind, clock.at(1000)) == []

    async def test_due_is_taken_once_by_concurrent_callers(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        tasks = [self.task(kind, f"t{i}") for i in range(5)]
        for i, task in enumerate(tasks):
            await ledger.schedule(task, None, clock.at(i), topic=kind, kind=ScheduleKind.RETRY)
        got = await asyncio.gather(ledger.due(kind, clock.at(10)), ledger.due(kind, clock.at(10)))
        assert sorted(ids(got[0] + got[1])) == [t.id for t in tasks]
        for batch in got:  # each caller gets its share oldest first
            assert ids(batch) == sorted(ids(batch))

    async def test_unschedule_removes_a_waiting_task_once(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        # Given a delayed task waiting in the schedule
        assert isinstance(ledger, ScheduleCanceller)
        task = self.task(kind, "d1")
        await ledger.schedule(task, None, clock.at(60), topic="to-d1", kind=ScheduleKind.DELAY)
        # When it is unscheduled, the entry removed comes back, and it is never released
        assert await ledger.unschedule(kind, "d1") == ScheduledTask(
            task, kind, clock.now + 60, "to-d1", ScheduleKind.DELAY)
        assert await ledger.due(kind, clock.at(100)) == []
        assert await ledger.find(kind, "d1") is None
        assert (await ledger.stats(kind)).scheduled == 0
        # Then unscheduling it again, or an unknown id, finds nothing
        assert await ledger.unschedule(kind, "d1") is None
        assert await ledger.unschedule(kind, "never") is None

    async def test_unschedule_keeps_other_kinds_and_released_tasks(
        self, ledger: Ledger, clock: Clock, kind: str
    ) -> None:
        assert isinstance(ledger, ScheduleCanceller)
        await ledger.schedule(self.task(kind, "r1"), None, clock.at(60), topic=kind, kind=ScheduleKind.RETRY)
        await ledger.schedule(self.task(kind, "d1"), None, clock.at(10), topic=kind, kind=ScheduleKind.DELAY)
        # A retry is not a delayed task: asking for DELAY leaves it scheduled
        assert await ledger.unschedule(kind, "r1", kind=ScheduleKind.DELAY) is None
        # A task released by due is outstanding, no longer in the schedule: too late
        assert ids(await ledger.due(kind, clock.at(20), kind=ScheduleKind.DELAY)) == ["d1"]
        assert await ledger.unschedule(kind, "d1", kind=ScheduleKind.DELAY) is None
        assert await ledger.find(kind, "d1") is not None
        assert ids(await ledger.due(kind, clock.at(100))) == ["r1"]

    async def test_unschedule_and_due_racing_give_the_task_to_one(
        self, ledger: Ledger, clock: Clock, kind: str
    ) -> None:
        assert isinstance(ledger, ScheduleCanceller)
        for i in range(5):
            await ledger.schedule(self.task(kind, f"t{i}"), None, clock.at(i), topic=kind,
                                  kind=ScheduleKind.DELAY)
        got = await asyncio.gather(ledger.due(kind, clock.at(10)),
                                   *(ledger.unschedule(kind, f"t{i}") for i in range(5)))
        released = ids(got[0])
        cancelled = [entry.task.id for entry in got[1:] if entry is not None]
        assert sorted(released + cancelled) == [f"t{i}" for i in range(5)]

    async def test_stats_count_states_and_oldest_age(self, ledger: Ledger, clock: Clock, kind: str) -> None:
        empty = await ledger.stats(kind)
        assert (empty.created, empty.started, empty.scheduled, empty.oldest_age) == (0, 0, 0, 0)
        a, b, c = self.task(kind), self.task(kind), self.task(kind)
        await ledger.created(a)
        clock.advance(100)
        await ledger.started(b)
        await ledger.schedule(c, None, clock.at(50), topic=kind, kind=ScheduleKind.DELAY)
        clock.advance(20)
        stats = await ledger.stats(kind)
        assert (stats.task_list, stats.created, stats.started, stats.scheduled) == (kind, 1, 1, 1)
        assert stats.oldest_age == 120
        assert kind in await ledger.task_lists()

    async def test_close_is_idempotent(self, clock: Clock) -> None:
        ledger = self.make_ledger(clock)
        await ledger.created(Task.new("close-test", "x"))
        await ledger.close()
        await ledger.close()
