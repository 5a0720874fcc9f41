"""``taskbus bench --delayed N``: how late delayed tasks reach a worker, per bus.

N tasks are sent delayed, due over a few seconds that start once they can all have been sent
(their ``run_at`` rounded up to the second, as every delayed task's is). Where the bus has no
native delay they wait in a SQLite ledger in a temporary directory and a ``DelayReleaser``
with the default poll interval sends them, as a worker does. A consumer on the topic notes
when each arrives; lateness is arrival minus ``run_at``. Printed: p50, p99 and the maximum,
and how many arrived early (never, or it is a bug). Not run in CI: the figures are for the
closing note of a release.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from task.bus.base import Consumer, Producer
from task.bus.registry import open_consumer, open_producer, scheme_of
from task.credentials import Credentials
from task.delay_release import DelayReleaser
from task.delayed import run_at, send_delayed
from task.errors import ConfigError
from task.ledger.sqlite import SqliteLedger
from task.task import Task

__all__ = ["bench_delayed", "lateness_figures"]

#: Seconds over which the tasks' due times are spread.
WINDOW = 5.0
#: Sends in flight at once while the tasks are delayed.
CONCURRENCY = 100


def lateness_figures(bus: str, how: str, late: list[float]) -> dict[str, Any]:
    """p50/p99/max lateness in milliseconds and the count of early arrivals (negative)."""
    ordered = sorted(late)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)] * 1000, 1)

    return {"bus": bus, "held_by": how, "tasks": len(ordered), "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": round(ordered[-1] * 1000, 1),
            "early": sum(x < 0 for x in ordered)}


async def _send_all(producer: Producer, topic: str, n: int, first: datetime,
                    ledger: SqliteLedger | None) -> str:
    """Delay ``n`` tasks due from ``first`` over ``WINDOW`` seconds; how they are held."""
    hows: set[str] = set()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            task = Task.new("bench-delayed", str(i))
            sent = await send_delayed(producer, topic, task, first + timedelta(seconds=WINDOW * i / n),
                                      ledger=ledger)
            hows.add(sent.how)

    await asyncio.gather(*(one(i) for i in range(n)))
    return "/".join(sorted(hows))


async def _arrivals(consumer: Consumer, n: int) -> list[float]:
    late: list[float] = []
    while len(late) < n:
        message = await consumer.msg()
        if message is None:
            raise RuntimeError(f"bench: the bus finished after {len(late)} of {n} delayed tasks")
        arrived = datetime.now(UTC)
        await message.ack()
        due = run_at(Task.from_json(message.body))
        assert due is not None
        late.append((arrived - due).total_seconds())
    return late


async def bench_delayed(url: str, n: int, credentials: Credentials) -> dict[str, Any]:
    """Send ``n`` delayed tasks on ``url`` and measure their lateness (see the module).

    Raises:
        ConfigError: a bad bus URL, or ``file:``/``file:-`` without a directory.
    """
    scheme = scheme_of(url)
    if url in ("file:", "file:-"):
        raise ConfigError("bench the file bus with a directory: --bus file:/tmp/bench/")
    with tempfile.TemporaryDirectory(prefix="taskbus-bench-delayed-") as tmp:
        if scheme == "file":
            (Path(tmp) / "data").mkdir()
            url = f"file:{tmp}/data/?follow=1"
        elif scheme == "memory":
            url = f"memory:bench-delayed-{uuid.uuid4().hex[:8]}"
        topic = "bench_delayed_" + uuid.uuid4().hex[:8]
        ledger = SqliteLedger(str(Path(tmp) / "ledger.db"))
        consumer = open_consumer(url, topic=topic, channel="bench", prefetch=1000, credentials=credentials)
        producer = open_producer(url, credentials=credentials)
        releaser = DelayReleaser(ledger, open_producer(url, credentials=credentials),
                                 task_lists=["bench-delayed"])
        try:
            await consumer.start()
            await producer.start()
            # due from a moment all N can have been sent by (a rough 1000 sends/s), on
            # whole seconds as run_at is
            began = time.monotonic()
            first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3 + n / 1000)
            how = await _send_all(producer, topic, n, first, ledger)
            if datetime.now(UTC) > first:
                print(f"bench: sending took {time.monotonic() - began:.1f}s, past the first due "
                      "time: the first tasks' lateness includes it", file=sys.stderr)
            await releaser.start()
            late = await _arrivals(consumer, n)
        finally:
            await releaser.stop()
            await consumer.stop()
            await producer.stop()
            await releaser.producer.stop()
            await ledger.close()
    return lateness_figures(scheme, how, late)


def lateness_line(result: dict[str, Any]) -> str:
    """The text output: one line with the same figures."""
    return (f"{result['bus']} ({result['held_by']}): {result['tasks']} delayed tasks late by "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms; "
            f"{result['early']} early")


async def run_delayed_bench(url: str, n: int, credentials: Credentials, as_json: bool) -> int:
    """``taskbus bench --delayed N``: print the figures (one JSON object with ``--json``)."""
    result = await bench_delayed(url, n, credentials)
    print(json.dumps(result) if as_json else lateness_line(result))
    return 0
