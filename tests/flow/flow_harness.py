"""What the flow engine and app tests share: a hand-moved clock, workflow files, a flow app
on the memory bus, and a worker's done task."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from task.apps.flow import FlowApp
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.flow.loader import WorkflowSet
from task.flow.store import TaskStore
from task.flow.store_memory import MemoryTaskStore
from task.ledger.base import Ledger
from task.task import Task

#: The test day starts a minute before the 05:00 tick.
START = datetime(2024, 1, 31, 4, 59, tzinfo=UTC)

#: An hourly load and a report needing its row count (issue 14's example), and an audit that
#: needs nothing.
ETL = """
[[phase]]
task = "load:hourly"
rule = "cron=0 * * * *&offset=-1h"
retry = 2
template = "s3://bucket/{yyyy}/{mm}/{dd}/{hh}.gz"

[[phase]]
task = "report"
dependsOn = "load:hourly"
rule = "require={meta:rows}&retry_delay=30s"
retry = 2
template = "?day={yyyy}-{mm}-{dd}&rows={meta:rows}"

[[phase]]
task = "audit"
dependsOn = "load"
template = "?hour={yyyy}-{mm}-{dd}T{hh}"

[[phase]]
task = "landing"
rule = "files=s3://landing/**/*.csv"
template = "{meta:file}?day={yyyy}-{mm}-{dd}"
"""


class TestClock:
    """A clock the test moves by hand; ``sleep`` returns once the test has moved it
    ``seconds`` on (polling), so a running app waits on simulated time."""

    __test__ = False

    def __init__(self, now: datetime = START) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        until = self.current + timedelta(seconds=seconds)
        while self.current < until:
            await asyncio.sleep(0.005)

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)

    def set(self, at: datetime) -> None:
        self.current = at


def write_workflows(root: Path, text: str = ETL, name: str = "etl.toml") -> Path:
    """A workflow directory with one file ``name``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text, "utf-8")
    return root


def memory_app(
    broker: MemoryBroker,
    workflows: Path,
    clock: TestClock,
    *,
    ledger: Ledger | None = None,
    store: TaskStore | None = None,
    **options: Any,
) -> FlowApp:
    """A flow app on the memory bus, reading ``done`` (and ``files``)."""
    return FlowApp(
        workflows=WorkflowSet(workflows),
        consumer=MemoryConsumer(broker, "done", "flow"),
        files_consumer=MemoryConsumer(broker, "files", "flow"),
        producer=MemoryProducer(broker),
        ledger=ledger,
        store=store if store is not None else MemoryTaskStore(),
        clock=clock,
        **options,
    )


def bodies(broker: MemoryBroker, topic: str) -> list[Task]:
    """The tasks sent to ``topic`` so far."""
    return [Task.from_json(b) for b in broker.bodies(topic)]


def finish(task: Task, result: str, at: datetime, msg: str = "", **meta: str) -> Task:
    """``task`` as a worker sends it back: started and ended at ``at``, ``meta`` merged."""
    done = task.copy()
    for key, value in meta.items():
        done.set_meta(key, value)
    done.start(at)
    done.end(result, msg, at)
    return done


async def deliver(app: FlowApp, broker: MemoryBroker, done: Task) -> None:
    """Put a done task on the bus and let ``app`` handle it."""
    broker.publish("done", done.to_json())
    message = await app.consumer.msg()
    assert message is not None
    await app.handle_done(message)

