"""Time each page of the flow console on a day of 100,000 recorded tasks (SQLite store).

    .venv/bin/python scripts/flow_console_bench.py [-n 100000] [--runs 5] [--json]

The day is ``flow_store_bench``'s (20 types x 5 jobs, one in ten failing once then
retried, one in five starting a child under the same id, one in twenty still running),
recorded until it holds ``n`` tasks, plus 5,000 alerts and 10,000 files. A flow app on the
memory bus serves the console from that SQLite file on a local port; each page is fetched
over HTTP ``runs`` times and the median time to the last byte is printed (milliseconds),
with the page's size. Nothing is cached between requests: each one reads the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flow_store_bench import DAY, day_of_events

from task.apps.flow import FlowApp
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.flow.api import FlowApiServer
from task.flow.loader import WorkflowSet
from task.flow.store import AlertKind, AlertRecord, FileRecord, TaskStore, day_span, open_store

WORKFLOW = """
[[phase]]
task = "type0:job0"
rule = "cron=0 * * * *"
template = "?hour={yyyy}-{mm}-{dd}T{hh}"

[[phase]]
task = "report"
dependsOn = "type0"
template = "?day={yyyy}-{mm}-{dd}"

[[phase]]
task = "type1:job1"
rule = "files=s3://landing/**/*.csv"
template = "{meta:file}"
"""


async def fill(store: TaskStore, tasks: int) -> int:
    """Record a day of about ``tasks`` tasks, 5,000 alerts and 10,000 files; the tasks kept."""
    events = day_of_events(int(tasks * 2.4))
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for event in events:
        key = (event.id, event.type, event.job)
        if key not in seen and len(seen) >= tasks:
            continue
        seen.add(key)
        kept.append(event)
    for i in range(0, len(kept), 500):
        await store.record(kept[i:i + 500])
    start = day_span(DAY)[0]
    for i in range(5_000):
        await store.record_alert(AlertRecord(start + i * 17, f"t{i * 20:07d}", f"type{i % 20}",
                                             f"job{i % 5}", AlertKind.ERROR, "boom: source not ready"))
    for i in range(10_000):
        await store.record_file(FileRecord(start + i * 8, f"s3://landing/2026/11/02/f{i}.csv", 2048,
                                           ("type1:job1",), (f"t{i:07d}",)))
    return await store.count_tasks(DAY)


PAGES = {
    "tasks (first page)": "/console/tasks?day={day}",
    "tasks, page 500 of 1000": "/console/tasks?day={day}&page=500",
    "tasks, last page": "/console/tasks?day={day}&page=1000",
    "tasks, type=type7": "/console/tasks?day={day}&type=type7",
    "tasks, type+job+result": "/console/tasks?day={day}&type=type7&job=job2&result=complete",
    "tasks, result=error": "/console/tasks?day={day}&result=error",
    "tasks, running=yes": "/console/tasks?day={day}&running=yes",
    "chain of a task": "/console/task?id=t0000003",
    "alerts (5,000)": "/console/alerts?day={day}",
    "files (10,000)": "/console/files?day={day}",
    "workflows": "/console/workflows",
    "about": "/console/about",
    "backload form": "/console/backload",
}


async def measure(base: str, runs: int) -> dict[str, tuple[float, int]]:
    results: dict[str, tuple[float, int]] = {}
    async with aiohttp.ClientSession() as http:
        for name, path in PAGES.items():
            times, size = [], 0
            for _ in range(runs):
                began = time.perf_counter()
                async with http.get(base + path.format(day=DAY.isoformat())) as answer:
                    body = await answer.read()
                    assert answer.status == 200, (path, answer.status, body[:300])
                times.append((time.perf_counter() - began) * 1000)
                size = len(body)
            results[name] = (round(statistics.median(times), 1), size)
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="tasks on the day")
    parser.add_argument("--runs", type=int, default=5, help="fetches per page (median kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "wf").mkdir()
        (Path(tmp) / "wf" / "w.toml").write_text(WORKFLOW)
        store = open_store(f"sqlite:{Path(tmp) / 'ledger.db'}")
        began = time.perf_counter()
        tasks = await fill(store, args.n)
        filled = time.perf_counter() - began
        broker = MemoryBroker()
        app = FlowApp(workflows=WorkflowSet(Path(tmp) / "wf"), consumer=MemoryConsumer(broker, "done", "flow"),
                      producer=MemoryProducer(broker), store=store)
        api = FlowApiServer(app, port=0)  # the app's own server, on a port the OS picks
        await app.refresh()
        await api.start()
        try:
            results = await measure(f"http://127.0.0.1:{api.port}", args.runs)
        finally:
            await api.stop()
            await store.close()
    if args.json:
        print(json.dumps({"tasks": tasks, "pages_ms": {k: v[0] for k, v in results.items()}}))
        return
    print(f"{tasks} tasks recorded in {filled:.0f}s; median of {args.runs} fetches per page")
    print(f"| {'page':28} | ms | bytes |")
    for name, (ms, size) in results.items():
        print(f"| {name:28} | {ms} | {size} |")


if __name__ == "__main__":
    asyncio.run(main())
