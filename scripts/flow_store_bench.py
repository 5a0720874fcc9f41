"""Time the flow task store's console reads on one day of 100,000 recorded events.

    .venv/bin/python scripts/flow_store_bench.py [--url sqlite:/tmp/x.db] [-n 100000] [--json]

The day: 100 type:job pairs (20 types x 5 jobs); each task is created and done; one in ten
fails first, is retried and then completes; one in five completed tasks starts a child under
the same id; one in twenty is still running. Events are recorded in batches of 500, as flow
batches them. Each read is timed 5 times; the median is printed (milliseconds).
By default the store is a new SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

from task.flow.store import Event, TaskEvent, TaskStore, day_span, open_store

DAY = date(2026, 11, 2)
BATCH = 500


def _rfc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(base: dict[str, str], at: float, kind: Event, later: float, result: str = "",
           **extra: str | int) -> TaskEvent:
    fields: dict[str, str | int] = {**base, **extra}
    started = _rfc(at + later - 1) if kind is Event.DONE else ""
    ended = _rfc(at + later) if kind is Event.DONE else ""
    return TaskEvent(event=kind, at=at + later, result=result, started=started, ended=ended,
                     **fields)  # type: ignore[arg-type]


def day_of_events(n: int) -> list[TaskEvent]:
    """About ``n`` events of one day, spread over it in time order."""
    start = day_span(DAY)[0]
    events: list[TaskEvent] = []
    task = 0
    while len(events) < n:
        at = start + 86_000 * len(events) / n
        id, type, job = f"t{task:07d}", f"type{task % 20}", f"job{task // 20 % 5}"
        base = {"id": id, "type": type, "job": job, "info": f"s3://bucket/{id}.gz",
                "meta": "workflow=w.toml", "workflow": "w.toml", "created": _rfc(at)}

        ev = partial(_event, base, at)
        events.append(ev(Event.CREATED, 0))
        if task % 20 == 19:
            pass  # still running
        elif task % 10 == 3:
            events += [ev(Event.DONE, 2, "error", msg="boom"), ev(Event.RETRIED, 3, attempt=1),
                       ev(Event.DONE, 5, "complete")]
        else:
            events.append(ev(Event.DONE, 2, "complete"))
            if task % 5 == 0:
                events.append(ev(Event.CHILD, 2, type="report", job="", parent=f"{type}:{job}"))
        task += 1
    return events[:n]


async def _median(work: Callable[[], Awaitable[object]], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        await work()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 2)


async def bench(store: TaskStore, n: int) -> dict[str, float]:
    """Record ``n`` events into ``store``, then time the reads; milliseconds per call."""
    events = day_of_events(n)
    began = time.perf_counter()
    for i in range(0, len(events), BATCH):
        await store.record(events[i:i + BATCH])
    recorded = time.perf_counter() - began
    tasks = await store.count_tasks(DAY)
    return {
        "events": len(events),
        "tasks": tasks,
        "record_events_per_s": round(len(events) / recorded),
        "tasks_first_page_ms": await _median(lambda: store.tasks(DAY)),
        "tasks_page_at_offset_50000_ms": await _median(lambda: store.tasks(DAY, offset=50_000)),
        "tasks_type_job_ms": await _median(lambda: store.tasks(DAY, type="type7", job="job2")),
        "tasks_result_error_ms": await _median(lambda: store.tasks(DAY, result="error")),
        "tasks_running_ms": await _median(lambda: store.tasks(DAY, running=True)),
        "count_tasks_ms": await _median(lambda: store.count_tasks(DAY)),
        "count_tasks_type_ms": await _median(lambda: store.count_tasks(DAY, type="type7")),
        "count_tasks_running_ms": await _median(lambda: store.count_tasks(DAY, running=True)),
        "recap_ms": await _median(lambda: store.recap(DAY)),
        "chain_ms": await _median(lambda: store.chain("t0000003")),
        "unfinished_ms": await _median(lambda: store.unfinished(day_span(DAY)[1])),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="store URL (default: a new SQLite file)")
    parser.add_argument("-n", type=int, default=100_000, help="events to record")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.url or f"sqlite:{Path(tmp) / 'ledger.db'}")
        try:
            result = await bench(store, args.n)
            about = await store.about()
        finally:
            await store.close()
    if args.json:
        print(json.dumps({**result, "bytes": about["bytes"]}))
    else:
        for key, value in {**result, "bytes": about["bytes"]}.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    asyncio.run(main())
