"""``taskbus bench``: no-op tasks through a real Launcher, measured end to end.

For a broker bus the same run also measures a raw client loop with the same guarantees
(same prefetch and concurrency, done message confirmed before the ack) against the same
server, and prints our ratio to it: the cost of taskbus itself, not of the broker.
Publishing the backlog is not timed; the clock runs from the Launcher's start (connect,
subscribe) until exactly ``n`` tasks are done.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import json
import pstats
import sys
import tempfile
import time
import uuid
from typing import Any, ClassVar

from pydantic import Field

from task.apps.nop import NopWorker
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.bus.registry import Credentials, open_consumer, open_producer, scheme_of
from task.errors import ConfigError
from task.launcher import Launcher, LauncherOptions
from task.progress import Progress
from task.settings import BusSettings
from task.task import Task

__all__ = ["RAW_LOOPS", "BenchApp", "BenchSettings", "bench_launcher"]

#: bus scheme -> module with ``raw_loop`` (see task/bench/raw/__init__.py)
RAW_LOOPS = {
    "nats": "task.bench.raw.nats",
    "jetstream": "task.bench.raw.jetstream",
    "kafka": "task.bench.raw.kafka",
    "nsq": "task.bench.raw.nsq",
    "nsqlookup": "task.bench.raw.nsq",
}


class BenchSettings(BusSettings):
    """``taskbus bench``: measure tasks/s through a real Launcher."""

    bus: str = Field("memory:", description="bus URL to measure (memory:, file:DIR, nats://, jetstream://, kafka://, nsq://)")
    n: int = Field(20000, ge=1, description="number of tasks", json_schema_extra={"short": "-n"})
    max_in_progress: int = Field(100, ge=1, description="tasks run at once (and prefetch)")
    json_output: bool = Field(False, description="print one JSON object", json_schema_extra={"flag": "--json"})
    raw: bool = Field(True, description="also run the raw client loop on broker buses")
    profile: bool = Field(False, description="print where the time goes (cProfile, top functions)")


def _tasks(n: int) -> list[bytes]:
    return [Task.new("nop", "", id=f"bench-{i}").to_json() for i in range(n)]


async def bench_launcher(
    url: str, n: int, max_in_progress: int, credentials: Credentials, profiler: cProfile.Profile | None = None
) -> float:
    """Seconds for our Launcher to finish ``n`` no-op tasks waiting on ``url``.

    ``profiler`` (when given) records only the timed part, not the publishing of the backlog.
    """
    options = LauncherOptions(max_in_progress=max_in_progress, task_type="nop", lifetime_workers=n)
    scheme = scheme_of(url)
    if scheme == "memory":
        broker = MemoryBroker()
        for body in _tasks(n):
            broker.publish("nop", body)
        launcher = Launcher(NopWorker, MemoryConsumer(broker, "nop", prefetch=max_in_progress),
                            MemoryProducer(broker), options)
    else:
        topic = "bench_" + uuid.uuid4().hex[:8]
        options.topic = topic
        options.done_topic = topic + "_done"
        consumer = open_consumer(url, topic=topic, channel=topic, prefetch=max_in_progress, credentials=credentials)
        if scheme == "nats":  # core NATS drops what nobody is subscribed to: subscribe first
            await consumer.start()
        producer = open_producer(url, credentials=credentials)
        # a bar on a terminal only: bench output is often piped into a file of figures
        progress = Progress(n, sys.stderr, label="publishing") if sys.stderr.isatty() else None
        async with producer:
            for body in _tasks(n):
                await producer.send(topic, body)
                if progress is not None:
                    progress.advance()
        if progress is not None:
            progress.close()
        launcher = Launcher(NopWorker, consumer, open_producer(url, credentials=credentials), options)
    if profiler is not None:
        profiler.enable()
    began = time.perf_counter()
    await launcher.run()
    seconds = time.perf_counter() - began
    if profiler is not None:
        profiler.disable()
    finished = launcher.stats()["tasks_finished"]
    if finished != n:
        raise RuntimeError(f"bench: the launcher finished {finished} of {n} tasks")
    return seconds


async def _raw(url: str, n: int, max_in_progress: int, credentials: Credentials) -> float | None:
    module_name = RAW_LOOPS.get(scheme_of(url))
    if module_name is None:
        return None
    module: Any = importlib.import_module(module_name)
    return float(await module.raw_loop(url, n=n, max_in_progress=max_in_progress, credentials=credentials))


class BenchApp:
    """Runs the benchmark once and prints the figures."""

    Settings: ClassVar[type[BenchSettings]] = BenchSettings

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self.credentials = settings.credentials()

    @classmethod
    def from_settings(cls, settings: BenchSettings) -> BenchApp:
        return cls(settings)

    async def run(self) -> int:
        s = self.settings
        url = s.bus
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if scheme_of(url) == "file" and url in ("file:", "file:-"):
            raise ConfigError("bench the file bus with a directory: --bus file:/tmp/bench/")
        if scheme_of(url) == "file":
            tmp = tempfile.TemporaryDirectory(prefix="taskbus-bench-")
            url = f"file:{tmp.name}/"
        profiler = cProfile.Profile() if s.profile else None
        try:
            seconds = await bench_launcher(url, s.n, s.max_in_progress, self.credentials, profiler)
            raw_seconds = await _raw(url, s.n, s.max_in_progress, self.credentials) if s.raw else None
        finally:
            if tmp is not None:
                tmp.cleanup()
        result: dict[str, Any] = {
            "bus": scheme_of(url),
            "tasks": s.n,
            "max_in_progress": s.max_in_progress,
            "seconds": round(seconds, 4),
            "tasks_per_s": round(s.n / seconds, 1),
            "per_task_us": round(seconds / s.n * 1e6, 2),
            "raw_tasks_per_s": round(s.n / raw_seconds, 1) if raw_seconds else None,
            "ratio": round(raw_seconds / seconds, 3) if raw_seconds else None,
        }
        if s.json_output:
            print(json.dumps(result))
        else:
            line = (f"{result['bus']}: {s.n} tasks, max_in_progress {s.max_in_progress}: "
                    f"{result['tasks_per_s']:,.0f} tasks/s ({result['per_task_us']} µs/task)")
            if raw_seconds:
                line += f"; raw client {result['raw_tasks_per_s']:,.0f} tasks/s; ratio {result['ratio']}"
            print(line)
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue(), file=sys.stderr)
        return 0

    async def stop(self) -> None:
        """The run is bounded by ``n``; nothing to interrupt."""


