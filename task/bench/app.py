"""``taskbus bench``: no-op tasks through a real Launcher, measured end to end.

For a broker bus the same run also measures a raw client loop against the same server
(``task.bench.raw``: the peer harness's loops, the fastest the client allows with the same
delivery guarantee) and prints our ratio to it: the cost of taskbus itself, not of the
broker. Publishing the backlog is not timed; the clock runs from the Launcher's start
(connect, subscribe) until exactly ``n`` tasks are done. Besides wall time, each run reports
this process's CPU microseconds per task over the timed part, the figure that holds on a
shared machine.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import json
import pstats
import sys
import tempfile
import uuid
from typing import Any, ClassVar

from pydantic import Field

from task.apps.nop import NopWorker
from task.bench.timing import Stopwatch, Timing
from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.bus.registry import open_consumer, open_producer, scheme_of
from task.credentials import Credentials
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
    delayed: int = Field(0, ge=0, description="instead: lateness (p50/p99) of this many delayed tasks (task.bench.delayed)")


def _tasks(n: int) -> list[bytes]:
    return [Task.new("nop", "", id=f"bench-{i}").to_json() for i in range(n)]


async def bench_launcher(
    url: str, n: int, max_in_progress: int, credentials: Credentials, profiler: cProfile.Profile | None = None
) -> Timing:
    """Time for our Launcher to finish ``n`` no-op tasks waiting on ``url``.

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
    watch = Stopwatch()
    await launcher.run()
    timing = watch.stop()
    if profiler is not None:
        profiler.disable()
    finished = launcher.stats()["tasks_finished"]
    if finished != n:
        raise RuntimeError(f"bench: the launcher finished {finished} of {n} tasks")
    return timing


async def _raw(url: str, n: int, max_in_progress: int, credentials: Credentials) -> Timing | None:
    module_name = RAW_LOOPS.get(scheme_of(url))
    if module_name is None:
        return None
    module: Any = importlib.import_module(module_name)
    timing: Timing = await module.raw_loop(url, n=n, max_in_progress=max_in_progress, credentials=credentials)
    return timing


def _figures(bus: str, n: int, max_in_progress: int, ours: Timing, raw: Timing | None) -> dict[str, Any]:
    """The JSON object ``--json`` prints; ``raw_*`` and ``ratio`` are None without a raw run."""
    return {
        "bus": bus,
        "tasks": n,
        "max_in_progress": max_in_progress,
        "seconds": round(ours.seconds, 4),
        "tasks_per_s": round(n / ours.seconds, 1),
        "per_task_us": round(ours.seconds / n * 1e6, 2),
        "cpu_us_per_task": round(ours.cpu_us_per_task(n), 2),
        "raw_seconds": round(raw.seconds, 4) if raw is not None else None,
        "raw_tasks_per_s": round(n / raw.seconds, 1) if raw is not None else None,
        "raw_cpu_us_per_task": round(raw.cpu_us_per_task(n), 2) if raw is not None else None,
        "ratio": round(raw.seconds / ours.seconds, 3) if raw is not None else None,
    }


def _line(result: dict[str, Any]) -> str:
    """The text output: one line with the same figures."""
    line = (f"{result['bus']}: {result['tasks']} tasks, max_in_progress {result['max_in_progress']}: "
            f"{result['tasks_per_s']:,.0f} tasks/s ({result['per_task_us']} µs/task, "
            f"CPU {result['cpu_us_per_task']} µs/task)")
    if result["raw_tasks_per_s"] is not None:
        line += (f"; raw client {result['raw_tasks_per_s']:,.0f} tasks/s "
                 f"(CPU {result['raw_cpu_us_per_task']} µs/task); ratio {result['ratio']}")
    return line


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
        if s.delayed:
            from task.bench.delayed import run_delayed_bench
            return await run_delayed_bench(s.bus, s.delayed, self.credentials, s.json_output)
        url = s.bus
        tmp: tempfile.TemporaryDirectory[str] | None = None
        if scheme_of(url) == "file" and url in ("file:", "file:-"):
            raise ConfigError("bench the file bus with a directory: --bus file:/tmp/bench/")
        if scheme_of(url) == "file":
            tmp = tempfile.TemporaryDirectory(prefix="taskbus-bench-")
            url = f"file:{tmp.name}/"
        profiler = cProfile.Profile() if s.profile else None
        try:
            ours = await bench_launcher(url, s.n, s.max_in_progress, self.credentials, profiler)
            raw = await _raw(url, s.n, s.max_in_progress, self.credentials) if s.raw else None
        finally:
            if tmp is not None:
                tmp.cleanup()
        result = _figures(scheme_of(url), s.n, s.max_in_progress, ours, raw)
        if s.json_output:
            print(json.dumps(result))
        else:
            print(_line(result))
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
            print(out.getvalue(), file=sys.stderr)
        return 0

    async def stop(self) -> None:
        """The run is bounded by ``n``; nothing to interrupt."""


