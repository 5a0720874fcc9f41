"""The Cassandra ledger's schedule as an operator sees it: ``scheduled``/``find_scheduled``
(``ScheduleReader``, so ``taskbus ledger ls`` lists it), on the fake session.

The ``ScheduleReader`` tests every backend passes are imported from ``test_schedule_reader``
and run here again with this module's ``ledger`` fixture, a Cassandra ledger at the same
instant; the tests below add what is Cassandra's own (hourly buckets, rows of other code).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from task.apps.ledger_admin import LedgerAdmin
from task.ledger.base import ScheduledTask, ScheduleKind, ScheduleReader
from task.ledger.cassandra import CassandraLedger
from task.ledger.cassandra_session import CassandraOptions, SharedSession
from task.task import Task
from tests.ledger.fake_cassandra import FakeCluster, FakeSession
from tests.ledger.test_schedule_reader import (  # noqa: F401  (collected again, on Cassandra)
    NOW,
    test_scheduled_and_find_scheduled_say_where_and_why,
    test_scheduled_lists_soonest_first_and_releases_nothing,
)

assert NOW % 3600 == 0  # at the start of an hour: the schedule's buckets are hours


def _ledger(session: FakeSession | None = None) -> CassandraLedger:
    ledger = CassandraLedger(CassandraOptions.from_url("cassandra://fake/ks"), clock=lambda: NOW)
    ledger._shared = SharedSession(("fake",), FakeCluster(), session or FakeSession(), users=1)
    return ledger


@pytest.fixture
def ledger() -> CassandraLedger:
    return _ledger()


def at(delay: float) -> datetime:
    return datetime.fromtimestamp(NOW + delay, UTC)


async def test_scheduled_lists_soonest_first_across_buckets() -> None:
    async with _ledger() as ledger:
        assert isinstance(ledger, ScheduleReader)
        # Given retries of one list in three hourly buckets, scheduled out of order
        for id, delay in (("late", 2 * 3600 + 5), ("soon", 5), ("mid", 3600 + 30), ("soon2", 60)):
            await ledger.schedule(Task.new("fetch", id, id=id), None, at(delay),
                                  topic="fetch", kind=ScheduleKind.RETRY)
        await ledger.schedule(Task.new("other", "x", id="o"), None, at(0), topic="other",
                              kind=ScheduleKind.RETRY)
        # Then they are listed soonest first, up to the limit, and stay scheduled
        assert [(s.task.id, s.at) for s in await ledger.scheduled("fetch", 3)] == [
            ("soon", NOW + 5), ("soon2", NOW + 60), ("mid", NOW + 3630)]
        assert [s.task.id for s in await ledger.scheduled("fetch", 10)] == ["soon", "soon2", "mid", "late"]
        assert (await ledger.stats("fetch")).scheduled == 4
        assert await ledger.find("fetch", "soon") is None


async def test_find_scheduled_follows_a_task_scheduled_again_and_released() -> None:
    async with _ledger() as ledger:
        task = Task.new("fetch", "x", id="d1")
        await ledger.schedule(task, "delays", at(90), topic="fetch-slow", kind=ScheduleKind.DELAY)
        # scheduled again, into another bucket: found at its new time, with its new destination
        await ledger.schedule(task, "delays", at(4000), topic="fetch", kind=ScheduleKind.RETRY)
        assert await ledger.find_scheduled("delays", "d1") == ScheduledTask(
            task, "delays", NOW + 4000, "fetch", ScheduleKind.RETRY)
        # released: no longer scheduled
        assert [e.task.id for e in await ledger.due("delays", at(5000))] == ["d1"]
        assert await ledger.find_scheduled("delays", "d1") is None
        assert await ledger.scheduled("delays", 10) == []


async def test_a_kind_this_code_does_not_know_stays_scheduled(caplog: pytest.LogCaptureFixture) -> None:
    # Given a row a newer taskbus wrote with a kind unknown here, beside a known retry
    session = FakeSession()
    async with _ledger(session) as ledger:
        await ledger.schedule(Task.new("fetch", "x", id="n1"), None, at(-10), topic="fetch",
                              kind=ScheduleKind.DELAY)
        await ledger.schedule(Task.new("fetch", "y", id="r1"), None, at(-5), topic="fetch",
                              kind=ScheduleKind.RETRY)
        for row in session.data["task_schedule"][("fetch", int(NOW // 3600) - 1)].values():
            if row["id"] == "n1":
                row["kind"] = "cron"
        # When every kind is released, the unknown one is left for the code that knows it
        assert [e.task.id for e in await ledger.due("fetch", at(0))] == ["r1"]
        assert "'cron', unknown to this taskbus" in caplog.text
        assert (await ledger.stats("fetch")).scheduled == 1


async def test_ledger_ls_lists_the_cassandra_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a Cassandra ledger with an outstanding task, a retry and a delayed task
    ledger = _ledger()
    await ledger.created(Task.new("fetch", "x", id="a"))
    await ledger.schedule(Task.new("fetch", "y", id="r1"), None, at(30), topic="fetch-retries",
                          kind=ScheduleKind.RETRY)
    await ledger.schedule(Task.new("fetch", "z", id="d1"), None, at(120), topic="fetch",
                          kind=ScheduleKind.DELAY)
    # When an operator lists it
    assert await LedgerAdmin(ledger=ledger, action="ls", clock=lambda: NOW).run() == 0
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines()[1:]]
    # Then the schedule is listed, each with when it is due and where it goes
    assert rows == [
        ["fetch", "a", "created", "0", "0s", "idle", "0s", "-", "-"],
        ["fetch", "r1", "scheduled", "-", "-", "due", "in", "30s", "-", "retry:fetch-retries"],
        ["fetch", "d1", "scheduled", "-", "-", "due", "in", "2m", "-", "delay:fetch"],
    ]
    assert "cannot list scheduled tasks" not in captured.err
