"""What every task store owes flow and its console, written once and run against each backend.

Subclass ``StoreContract`` in ``tests/flow/test_store_<backend>.py`` and implement
``make_store()``; the ``store`` fixture closes it. Times are fixed instants of a made-up day,
never the clock. Each test uses its own ids (``self.ids``), so a backend that keeps data
between tests (a Cassandra keyspace) only needs a fresh day per test: ``DAY`` moves with
``self.shift``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest

from task.errors import LedgerError
from task.flow.store import (
    AlertKind,
    AlertRecord,
    Event,
    FileRecord,
    TaskEvent,
    TaskStore,
    day_span,
)
from task.task import Task


class StoreContract:
    #: days between the test's day and 2026-11-02 (a backend keeping data moves it per test)
    shift = 0

    def make_store(self) -> TaskStore:
        raise NotImplementedError

    @pytest.fixture
    async def store(self) -> AsyncIterator[TaskStore]:
        store = self.make_store()
        try:
            yield store
        finally:
            await store.close()

    @property
    def day(self) -> date:
        return date(2026, 11, 2) + timedelta(days=self.shift)

    def at(self, hour: float, day: int = 0) -> float:
        return day_span(self.day + timedelta(days=day))[0] + hour * 3600

    def id(self, name: str) -> str:
        if not hasattr(self, "_ids"):
            self._ids: dict[str, str] = {}
        return self._ids.setdefault(name, f"{name}-{uuid.uuid4().hex[:8]}")

    def ev(self, name: str, event: Event, hour: float, *, type: str = "load", job: str = "",
           result: str = "", started: float | None = None, msg: str = "", day: int = 0,
           attempt: int = 0, parent: str = "") -> TaskEvent:
        def rfc(seconds: float | None) -> str:
            return "" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        at = self.at(hour, day)
        done = event is Event.DONE
        return TaskEvent(
            id=self.id(name), type=type, job=job, event=event, at=at, result=result, msg=msg,
            info=f"s3://b/{name}", meta="workflow=w.toml", workflow="w.toml",
            created=rfc(self.at(0, day)), started=rfc(started) if done else "",
            ended=rfc(at) if done else "", parent=parent, attempt=attempt,
        )

    # --- chain -------------------------------------------------------------------------------

    async def test_chain_holds_every_event_of_an_id_across_types_in_time_order(self, store: TaskStore) -> None:
        # Given a task that failed once, was retried, completed and started a child (same id)
        events = [
            self.ev("a", Event.CREATED, 1),
            self.ev("a", Event.DONE, 1.5, result="error", msg="boom", started=self.at(1.1)),
            self.ev("a", Event.RETRIED, 2, attempt=1),
            self.ev("a", Event.DONE, 2.5, result="complete", started=self.at(2.1)),
            self.ev("a", Event.CHILD, 2.5, type="report", parent="load"),
            self.ev("b", Event.CREATED, 1.2),
        ]
        # When they are recorded out of order, in two batches
        await store.record(events[3:])
        await store.record(events[:3])
        # Then the chain is in time order, equal times in record order, and only this id
        chain = await store.chain(self.id("a"))
        assert [(e.event, e.type) for e in chain] == [
            (Event.CREATED, "load"), (Event.DONE, "load"), (Event.RETRIED, "load"),
            (Event.DONE, "load"), (Event.CHILD, "report")]
        assert chain[1] == events[1] and chain[4].parent == "load" and chain[2].attempt == 1
        assert await store.chain("nobody") == []

    async def test_events_without_an_id_are_skipped(self, store: TaskStore) -> None:
        event = self.ev("a", Event.CREATED, 1)
        await store.record([TaskEvent("", "load", "", Event.CREATED, event.at), event])
        await store.record([])
        assert await store.chain("") == []
        assert await store.count_tasks(self.day) == 1

    async def test_event_of_a_task_keeps_its_fields(self, store: TaskStore) -> None:
        task = Task.new("load", "s3://b/x", job="hourly", meta="workflow=w.toml&cron=x")
        task.id = self.id("t")
        await store.record([TaskEvent.of(task, Event.CREATED, self.at(3))])
        (event,) = await store.chain(task.id)
        assert (event.workflow, event.meta, event.job, event.info) == (
            "w.toml", "workflow=w.toml&cron=x", "hourly", "s3://b/x")

    # --- tasks ---------------------------------------------------------------------------------

    async def test_a_retried_task_is_one_row_with_its_latest_result(self, store: TaskStore) -> None:
        await store.record([
            self.ev("a", Event.CREATED, 1),
            self.ev("a", Event.DONE, 1.5, result="error", msg="boom", started=self.at(1.25)),
            self.ev("a", Event.RETRIED, 2, attempt=1),
        ])
        (row,) = await store.tasks(self.day)
        # While the retry runs: the error is the latest result, and the task is running again
        assert (row.result, row.running, row.attempts, row.msg) == ("error", True, 2, "boom")
        assert row.run_time == 900.0
        await store.record([self.ev("a", Event.DONE, 3, result="complete", msg="ok",
                                    started=self.at(2.5))])
        (row,) = await store.tasks(self.day)
        assert (row.id, row.type, row.job, row.day) == (self.id("a"), "load", "", self.day)
        assert (row.result, row.running, row.attempts, row.msg) == ("complete", False, 2, "ok")
        assert (row.run_time, row.first, row.last) == (1800.0, self.at(1), self.at(3))
        assert (row.workflow, row.info, row.name) == ("w.toml", "s3://b/a", "load")
        assert row.created.endswith("T00:00:00Z") and row.ended.endswith("T03:00:00Z")

    async def test_children_sharing_the_id_are_rows_of_their_own(self, store: TaskStore) -> None:
        await store.record([
            self.ev("a", Event.CREATED, 1, job="hourly"),
            self.ev("a", Event.DONE, 2, job="hourly", result="complete", started=self.at(1)),
            self.ev("a", Event.CHILD, 2, type="report", parent="load:hourly"),
        ])
        rows = await store.tasks(self.day)
        assert [(r.name, r.running) for r in rows] == [("report", True), ("load:hourly", False)]

    async def test_a_done_recorded_late_does_not_make_the_task_run_again(self, store: TaskStore) -> None:
        # The done event is recorded before its (earlier) created event
        await store.record([self.ev("a", Event.DONE, 2, result="complete", started=self.at(1))])
        await store.record([self.ev("a", Event.CREATED, 1)])
        (row,) = await store.tasks(self.day)
        assert (row.running, row.result, row.attempts, row.first) == (False, "complete", 1, self.at(1))

    async def test_a_task_stays_on_the_day_of_its_first_event(self, store: TaskStore) -> None:
        await store.record([self.ev("a", Event.CREATED, 23.5)])
        await store.record([self.ev("a", Event.DONE, 0.5, day=1, result="complete",
                                    started=self.at(23.9))])
        (row,) = await store.tasks(self.day)
        assert (row.day, row.running, row.result) == (self.day, False, "complete")
        assert await store.tasks(self.day + timedelta(days=1)) == []
        assert self.day + timedelta(days=1) not in await store.days()
        assert self.day in await store.days()

    async def _day_of_tasks(self, store: TaskStore) -> None:
        events = []
        for n in range(12):
            name, job = f"t{n}", ("hourly" if n % 2 else "daily")
            type = "load" if n < 8 else "report"
            events.append(self.ev(name, Event.CREATED, n, type=type, job=job))
            if n % 3 == 0:
                continue  # still running
            result = "error" if n % 3 == 1 else "complete"
            events.append(self.ev(name, Event.DONE, n + 0.5, type=type, job=job, result=result,
                                  started=self.at(n + 0.25)))
        await store.record(events)

    async def test_filters_and_counts_agree(self, store: TaskStore) -> None:
        await self._day_of_tasks(store)
        cases: list[dict[str, object]] = [
            {}, {"type": "load"}, {"type": "report", "job": "daily"}, {"job": "hourly"},
            {"result": "error"}, {"result": ""}, {"running": True}, {"running": False},
            {"type": "load", "result": "complete", "running": False}, {"type": "nothing"},
        ]
        for filters in cases:
            rows = await store.tasks(self.day, limit=1000, **filters)  # type: ignore[arg-type]
            count = await store.count_tasks(self.day, **filters)  # type: ignore[arg-type]
            assert count == len(rows), filters
            for row in rows:
                for key, value in filters.items():
                    assert getattr(row, key) == value, (filters, row)
        assert await store.count_tasks(self.day) == 12
        assert await store.count_tasks(self.day, running=True) == 4
        assert await store.count_tasks(self.day, result="error") == 4
        assert await store.count_tasks(self.day + timedelta(days=1)) == 0

    async def test_pages_are_newest_first_and_do_not_overlap(self, store: TaskStore) -> None:
        await self._day_of_tasks(store)
        pages = [await store.tasks(self.day, limit=5, offset=o) for o in (0, 5, 10)]
        names = [row.id.split("-")[0] for page in pages for row in page]
        assert [len(p) for p in pages] == [5, 5, 2]
        assert names == [f"t{n}" for n in range(11, -1, -1)]
        load = await store.tasks(self.day, type="load", limit=3, offset=3)
        assert [row.id.split("-")[0] for row in load] == ["t4", "t3", "t2"]

    # --- recap ---------------------------------------------------------------------------------

    async def test_recap_counts_and_times_per_type_and_job(self, store: TaskStore) -> None:
        await self._day_of_tasks(store)
        recap = {(r.type, r.job): r for r in await store.recap(self.day)}
        assert list(recap) == [("load", "daily"), ("load", "hourly"), ("report", "daily"),
                               ("report", "hourly")]
        load_daily = recap[("load", "daily")]  # t0 running, t2 complete, t4 error, t6 running
        assert (load_daily.tasks, load_daily.running, load_daily.complete, load_daily.error,
                load_daily.alert, load_daily.warn) == (4, 2, 1, 1, 0, 0)
        assert (load_daily.min_run, load_daily.avg_run, load_daily.max_run) == (900.0, 900.0, 900.0)
        assert (load_daily.first, load_daily.last) == (self.at(0), self.at(6))
        report_daily = recap[("report", "daily")]  # t8 complete, t10 error
        assert (report_daily.tasks, report_daily.running, report_daily.complete) == (2, 0, 1)
        assert await store.recap(self.day + timedelta(days=1)) == []

    async def test_recap_run_times_are_none_when_nothing_finished(self, store: TaskStore) -> None:
        await store.record([self.ev("a", Event.CREATED, 1)])
        (row,) = await store.recap(self.day)
        assert (row.tasks, row.running, row.min_run, row.avg_run, row.max_run) == (1, 1, None, None, None)

    # --- unfinished ----------------------------------------------------------------------------

    async def test_unfinished_are_running_tasks_first_seen_before_the_cutoff(self, store: TaskStore) -> None:
        await store.record([
            self.ev("old", Event.CREATED, 1),
            self.ev("older", Event.CREATED, 0.5),
            self.ev("done", Event.CREATED, 1),
            self.ev("done", Event.DONE, 2, result="complete", started=self.at(1)),
            self.ev("new", Event.CREATED, 5),
        ])
        rows = await store.unfinished(self.at(3))
        mine = [r.id for r in rows if r.id in self._ids.values()]
        assert mine == [self.id("older"), self.id("old")]
        assert len(await store.unfinished(self.at(3), limit=1)) == 1
        later = await store.unfinished(self.at(3), created_after=self.at(0.75))
        assert [r.id for r in later if r.id in self._ids.values()] == [self.id("old")]

    # --- alerts and files ----------------------------------------------------------------------

    async def test_alerts_and_files_by_day_in_time_order(self, store: TaskStore) -> None:
        a1 = AlertRecord(self.at(5), self.id("a"), "load", "", AlertKind.ERROR, "out of retries")
        a0 = AlertRecord(self.at(1), self.id("b"), "load", "x", AlertKind.INCOMPLETE, "stuck")
        late = AlertRecord(self.at(0, day=1), self.id("c"), "load", "", AlertKind.ALERT, "")
        for alert in (a1, a0, late):
            await store.record_alert(alert)
        f1 = FileRecord(self.at(2), "/in/b.gz", 10, ("load:hourly",), (self.id("a"),))
        f0 = FileRecord(self.at(1), "/in/a.gz", 5)
        for file in (f1, f0):
            await store.record_file(file)
        assert await store.alerts(self.day) == [a0, a1]
        assert await store.alerts(self.day + timedelta(days=1)) == [late]
        assert await store.files(self.day) == [f0, f1]
        assert await store.files(self.day - timedelta(days=1)) == []

    # --- retention and about -------------------------------------------------------------------

    async def test_clean_forgets_whole_days_that_ended(self, store: TaskStore) -> None:
        await store.record([self.ev("a", Event.CREATED, 23), self.ev("b", Event.CREATED, 1, day=1)])
        # a's done lands on the next day: it goes with a
        await store.record([self.ev("a", Event.DONE, 0.5, day=1, result="complete",
                                    started=self.at(23))])
        await store.record_alert(AlertRecord(self.at(1), "x", "load", "", AlertKind.WARN, ""))
        await store.record_file(FileRecord(self.at(1), "/in/a", 1))
        # When cleaning up to noon of the next day: only whole days that ended go
        assert await store.clean(self.at(12, day=1)) == 2
        assert await store.chain(self.id("a")) == []
        assert await store.tasks(self.day) == []
        assert await store.alerts(self.day) == [] and await store.files(self.day) == []
        assert [r.id for r in await store.tasks(self.day + timedelta(days=1))] == [self.id("b")]
        assert self.day not in await store.days()
        # A day ends at midnight: cleaning to the next midnight removes it, not the one after
        assert await store.clean(self.at(0, day=2)) == 1
        assert await store.clean(self.at(0, day=2)) == 0

    async def test_about_counts_events_and_names_the_oldest_day(self, store: TaskStore) -> None:
        before = await store.about()
        await store.record([self.ev("a", Event.CREATED, 1), self.ev("a", Event.DONE, 2,
                                                                    result="complete")])
        about = await store.about()
        assert about["rows"] == before["rows"] + 2
        assert about["oldest_day"] is not None and about["oldest_day"] <= self.day.isoformat()
        assert about["backend"]

    async def test_a_closed_store_refuses_work(self, store: TaskStore) -> None:
        await store.record([self.ev("a", Event.CREATED, 1)])
        await store.close()
        await store.close()
        with pytest.raises(LedgerError, match="closed"):
            await store.chain(self.id("a"))
