"""``taskbus recap``: what happened, per task type, in the done tasks.

Reads done tasks from JSON-lines files given as arguments, or else from the done topic of a
bus (a file bus is read to its end; a broker until the app is stopped), and prints per type
the count of each result, the min/mean/max duration (``ended - started``) and the last
errors. ``--json`` prints the same as one JSON object for scripts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar, TextIO

from pydantic import Field

from task.apps.lifecycle import Lifecycle, LifecycleApp
from task.bus.base import Consumer
from task.bus.registry import open_consumer
from task.errors import BusError, ConfigError, InvalidTaskError
from task.result import Result
from task.settings import AppSettings, BusSettings, positional
from task.task import Task

__all__ = ["Recap", "RecapApp", "RecapSettings", "TypeRecap"]

logger = logging.getLogger(__name__)

#: Results printed first, in this order; any other result string follows, sorted.
KNOWN_RESULTS = [str(r) for r in Result]


class RecapSettings(BusSettings):
    """``taskbus recap``: summarise done tasks per type."""

    files: list[str] = positional([], description="done-task files (JSON lines, - for stdin); none: read the bus")
    topic: str = Field("done", description="topic of done tasks to read from the bus")
    channel: str = Field("recap", description="channel / consumer group on the done topic")
    errors: int = Field(3, ge=0, description="last errors shown per type")
    json_output: bool = Field(False, description="print one JSON object", json_schema_extra={"short": "--json"})


@dataclass
class TypeRecap:
    """The figures of one task type."""

    type: str
    last_errors: deque[dict[str, str]]
    results: Counter[str] = field(default_factory=Counter)
    timed: int = 0
    total_s: float = 0.0
    min_s: float = 0.0
    max_s: float = 0.0

    def add(self, task: Task) -> None:
        self.results[task.result or "(none)"] += 1
        started, ended = task.started_at, task.ended_at
        if started is not None and ended is not None and ended >= started:
            seconds = (ended - started).total_seconds()
            self.min_s = seconds if not self.timed else min(self.min_s, seconds)
            self.max_s = max(self.max_s, seconds)
            self.total_s += seconds
            self.timed += 1
        if task.result == Result.ERROR:
            self.last_errors.append({"id": task.id, "ended": task.ended, "msg": task.msg})

    @property
    def count(self) -> int:
        return sum(self.results.values())

    @property
    def mean_s(self) -> float:
        return self.total_s / self.timed if self.timed else 0.0

    def ordered_results(self) -> list[tuple[str, int]]:
        """Known results first (complete, error, warn, alert), then others by name."""
        names = [r for r in KNOWN_RESULTS if r in self.results]
        names += sorted(r for r in self.results if r not in KNOWN_RESULTS)
        return [(name, self.results[name]) for name in names]

    def to_dict(self) -> dict[str, object]:
        return {
            "tasks": self.count,
            "results": dict(self.ordered_results()),
            "duration_s": {"min": round(self.min_s, 3), "mean": round(self.mean_s, 3),
                           "max": round(self.max_s, 3), "timed": self.timed},
            "last_errors": list(self.last_errors),
        }


class Recap:
    """Figures per task type, built one done task at a time."""

    def __init__(self, errors: int = 3) -> None:
        self.errors = errors
        self.types: dict[str, TypeRecap] = {}
        self.invalid = 0

    def add(self, task: Task) -> None:
        recap = self.types.get(task.type)
        if recap is None:
            recap = self.types[task.type] = TypeRecap(task.type, deque(maxlen=self.errors))
        recap.add(task)

    def add_body(self, body: bytes) -> None:
        """Add one message; one that is not a task is counted and logged."""
        try:
            self.add(Task.from_json(body))
        except InvalidTaskError as err:
            self.invalid += 1
            logger.warning("not a task, skipped: %s", err)

    def to_dict(self) -> dict[str, object]:
        types = {name: self.types[name].to_dict() for name in sorted(self.types)}
        total = sum(t.count for t in self.types.values())
        return {"tasks": total, "invalid": self.invalid, "types": types}

    def text(self) -> str:
        """The human-readable report."""
        lines: list[str] = []
        for name in sorted(self.types):
            figures = self.types[name]
            results = "  ".join(f"{r} {n}" for r, n in figures.ordered_results())
            lines.append(f"{name}: {figures.count} tasks  {results}")
            if figures.timed:
                lines.append(f"  duration  min {_secs(figures.min_s)}  mean {_secs(figures.mean_s)}"
                             f"  max {_secs(figures.max_s)}  ({figures.timed} timed)")
            if figures.last_errors:
                lines.append("  last errors:")
                lines += [f"    {e['ended'] or '-'}  {e['id'] or '-'}  {e['msg']}"
                          for e in figures.last_errors]
        if not lines:
            lines.append("no done tasks")
        if self.invalid:
            lines.append(f"{self.invalid} messages were not tasks")
        return "\n".join(lines) + "\n"


class RecapApp(LifecycleApp):
    """Reads done tasks from ``files`` (or ``consumer``) and prints a ``Recap``."""

    Settings: ClassVar[type[AppSettings]] = RecapSettings

    def __init__(
        self,
        *,
        consumer: Consumer | None = None,
        files: Sequence[str] = (),
        errors: int = 3,
        as_json: bool = False,
        out: TextIO | None = None,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
    ) -> None:
        if consumer is None and not files:
            raise ConfigError("recap needs done-task files or a consumer to read from")
        self.consumer = consumer
        self.files = list(files)
        self.as_json = as_json
        self.out = out
        self.recap = Recap(errors)
        self.lifecycle = Lifecycle("recap", self.stats, logger=logger, parts=[consumer],
                                   status_host=status_host, status_port=status_port)
        self._stopping = threading.Event()  # read by the file-reading thread
        self._started = time.monotonic()
        info = consumer.info() if consumer is not None else {}
        #: what the start-up log line names when reading a bus; ``from_settings`` puts the URL in
        self.startup: dict[str, object] = {
            "bus": info.get("bus"), "topic": info.get("topic"), "channel": info.get("channel"),
            "status_port": status_port or None,
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> RecapApp:
        """Files when given, else a consumer of the settings' bus; no I/O.

        Raises:
            ConfigError: a bad bus URL.
        """
        assert isinstance(settings, RecapSettings)
        consumer = None
        if not settings.files:
            consumer = open_consumer(settings.bus, topic=settings.topic, channel=settings.channel,
                                     credentials=settings.credentials())
        app = cls(consumer=consumer, files=settings.files, errors=settings.errors,
                  as_json=settings.json_output, status_port=settings.status_port,
                  status_host=settings.status_host)
        app.startup.update(bus=settings.bus, topic=settings.topic, channel=settings.channel)
        return app

    def banner(self) -> dict[str, object] | None:
        """A start-up line only for a bus: a long read, so say what is read."""
        return self.startup if self.consumer is not None and not self.files else None

    async def work(self) -> int:
        """Read everything (or until stopped), then print the recap.

        Raises:
            ConfigError: a file cannot be read.
        """
        for name in self.files:
            await asyncio.to_thread(self._read_file, name)
        if self.consumer is not None and not self.files:
            while (message := await self.consumer.msg()) is not None:
                self.recap.add_body(message.body)
                try:
                    await message.ack()
                except BusError as err:  # the recap is read-only: a lost ack only repeats a line
                    logger.warning("acknowledging a done task failed: %s", err)
        out = self.out or sys.stdout
        out.write(json.dumps(self.recap.to_dict(), indent=1) + "\n" if self.as_json else self.recap.text())
        out.flush()
        return 0

    async def stop(self) -> None:
        """Stop reading; ``run()`` prints what it has read so far. Idempotent."""
        self._stopping.set()
        if self.consumer is not None:
            await self.consumer.stop()

    def stats(self) -> dict[str, object]:
        """Counters for the status endpoint, the recap so far included."""
        info: dict[str, object] = {"app": "recap", "runtime_s": round(time.monotonic() - self._started, 3)}
        info.update(self.recap.to_dict())
        if self.consumer is not None:
            info["consumer"] = self.consumer.info()
        return info

    def _read_file(self, name: str) -> None:
        if name == "-":
            self._read_lines(sys.stdin.buffer)
            return
        try:
            with Path(name).open("rb") as stream:
                self._read_lines(stream)
        except OSError as err:
            raise ConfigError(f"cannot read done tasks from {name!r}: {err.strerror or err}") from err

    def _read_lines(self, stream: BinaryIO) -> None:
        for line in stream:
            if self._stopping.is_set():
                return
            if line.strip():
                self.recap.add_body(line.rstrip(b"\r\n"))


def _secs(seconds: float) -> str:
    return f"{round(seconds, 3):g}s"
