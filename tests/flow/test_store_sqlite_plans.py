"""Every read the console makes of the SQLite task store is an index range, never a scan of
a table: what keeps its pages fast on a day of 100,000 tasks (scripts/flow_console_bench.py
times them). The statements are the store's own, caught as it runs them."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

from task.flow.store import AlertKind, AlertRecord, Event, FileRecord, TaskEvent, day_span
from task.flow.store_sqlite import SqliteTaskStore

DAY = date(2024, 1, 31)


async def test_console_reads_are_index_ranges(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = SqliteTaskStore(str(path))
    at = day_span(DAY)[0] + 60
    await store.record([TaskEvent("t1", "load", "hourly", Event.CREATED, at)])
    await store.record_alert(AlertRecord(at, "t1", "load", "hourly", AlertKind.ERROR, "boom"))
    await store.record_file(FileRecord(at, "s3://x/a.csv", 1, ("load:hourly",), ("t1",)))
    statements: list[str] = []
    await store._run(lambda conn: conn.set_trace_callback(statements.append))
    # When the console reads what its pages show
    for filters in ({}, {"type": "load"}, {"type": "load", "job": "hourly"}, {"result": "error"},
                    {"running": True}, {"type": "load", "job": "hourly", "result": "complete"}):
        await store.tasks(DAY, **filters, limit=100, offset=100)
        await store.count_tasks(DAY, **filters)
    await store.recap(DAY)
    await store.chain("t1")
    await store.alerts(DAY)
    await store.files(DAY)
    await store.close()
    # Then each statement's plan searches an index; none scans a table
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 16
    conn = sqlite3.connect(path)
    plans = {s: " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + s)) for s in selects}
    conn.close()
    scans = {s: plan for s, plan in plans.items() if "SCAN" in plan}
    assert scans == {}
    assert all("USING" in plan and "INDEX" in plan for plan in plans.values()), plans
