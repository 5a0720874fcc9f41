"""The fault suite's harness: ``taskbus`` processes to start, kill and restart, done tasks to
count, and the figures (tasks, kills, duplicates, lost) each test reports.

Workers run as real ``python -m task.cli worker ...`` processes, because a SIGKILL is only
honest against a process: no ``finally`` runs, no offset or commit is flushed. Done tasks are
read back from the done topic through the library's own consumer, in this test's process,
with a channel of their own so they never compete with a worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from task.bus.base import Consumer
from task.bus.registry import open_consumer, open_producer
from task.task import Task

__all__ = [
    "FIGURES",
    "REPO",
    "DoneTasks",
    "Figures",
    "TaskbusProcess",
    "count_from_env",
    "http_json",
    "make_tasks",
    "publish",
    "run_with_kills",
    "suffix",
    "until",
]

REPO = Path(__file__).parents[2]
#: every test's figures, printed in the terminal summary (see tests/faults/conftest.py)
FIGURES: list[Figures] = []


def count_from_env(name: str, default: int) -> int:
    """A count the CI keeps small and a person may raise: ``TASK_FAULT_TASKS=100000 pytest``."""
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def suffix() -> str:
    """A short random name part, so tests on a shared server never see each other's topics."""
    return uuid.uuid4().hex[:8]


@dataclass
class Figures:
    """What a fault test measured, for the issue's closing note."""

    test: str
    bus: str
    tasks: int
    kills: int = 0
    done_messages: int = 0
    unique_done: int = 0
    duplicates: int = 0
    lost: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, test: str, bus: str, ids: Iterable[str], done: Counter[str], **extra: object) -> Figures:
        wanted = set(ids)
        seen = {i for i in done if i in wanted}
        total = sum(n for i, n in done.items() if i in wanted)
        kills = int(extra.pop("kills", 0))  # type: ignore[call-overload]
        return cls(test, bus, len(wanted), kills, total, len(seen), total - len(seen),
                   len(wanted - seen), dict(extra))

    def record(self) -> Figures:
        """Keep for the summary and print now (shown with ``-s`` or when the test fails)."""
        FIGURES.append(self)
        print("fault figures:", json.dumps(asdict(self)))
        report = os.environ.get("TASK_FAULT_REPORT")
        if report:
            with open(report, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self)) + "\n")
        return self


def make_tasks(task_type: str, n: int, info: str = "", prefix: str = "t") -> list[Task]:
    """``n`` tasks with ids ``<prefix>0 …``, so a lost or doubled one is named in a failure."""
    return [Task.new(task_type, info, id=f"{prefix}{i}") for i in range(n)]


async def publish(url: str, topic: str, bodies: Iterable[bytes], *, concurrency: int = 1) -> None:
    """Send every body to ``topic``, ``concurrency`` sends in flight (each confirmed by the bus)."""
    async with open_producer(url) as producer:
        pending: set[asyncio.Task[None]] = set()
        for body in bodies:
            pending.add(asyncio.create_task(producer.send(topic, body)))
            if len(pending) >= concurrency:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 60.0,
                every: float = 0.02) -> None:
    """Wait for ``check`` to hold; fail naming ``what`` after ``timeout`` (a hang, not a figure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


class TaskbusProcess:
    """``python -m task.cli ARGV`` as a child process; its stderr goes to ``log``."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "task.cli", *argv], cwd=REPO,
            stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        self.rusage: object | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind runs in the child."""
        if self.running:
            self.popen.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the graceful shutdown a supervisor asks for."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 60.0) -> int:
        """The exit status; fails (after killing it) when the process does not end in time."""
        try:
            code = await asyncio.wait_for(asyncio.to_thread(self.popen.wait), timeout)
        except TimeoutError:
            self.popen.kill()
            self.popen.wait()
            raise AssertionError(f"{self.argv[0]} did not exit within {timeout:.0f}s:\n{self.output()}") from None
        finally:
            if self.popen.poll() is not None:
                self._log_file.close()
        return code

    async def close(self) -> None:
        """Make sure the process is gone (for ``finally``)."""
        self.kill()
        await self.wait(30)

    def output(self) -> str:
        """What the process logged so far (the tail), for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


class DoneTasks:
    """Done tasks read from a done topic in the background, counted by id.

    ``channel`` is a fresh one, so this reader gets every done task and shares with no worker.
    Use ``async with``; ``counts`` grows while the test runs.
    """

    def __init__(self, url: str, topic: str, *, channel: str = "") -> None:
        self.url = url
        self.topic = topic
        self.counts: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.keep_bodies = False
        self._consumer: Consumer = open_consumer(url, topic=topic, channel=channel or "c" + suffix(),
                                                 prefetch=500)
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self._consumer.start()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        while (message := await self._consumer.msg()) is not None:
            if self.keep_bodies:
                self.bodies.append(message.body)
            try:
                self.counts[json.loads(message.body).get("id", "")] += 1
            except ValueError:
                self.counts["<not json>"] += 1
            await message.ack()

    def covers(self, ids: Iterable[str]) -> bool:
        return all(i in self.counts for i in ids)

    async def settle(self, quiet: float = 1.0, timeout: float = 60.0) -> None:
        """Wait until no done task has arrived for ``quiet`` seconds (nothing more is coming)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(self.counts.values())
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            await asyncio.sleep(0.05)


async def run_with_kills(
    start: Callable[[], TaskbusProcess],
    done: DoneTasks,
    n: int,
    kills: int,
    rng: random.Random,
) -> tuple[TaskbusProcess, int]:
    """Run workers over ``n`` tasks, SIGKILLing the current one ``kills`` times at random points
    (after a random number of done tasks, then a random few milliseconds) and starting a fresh
    one each time. Returns the last worker, still running (or finished), and the kills made.
    """
    points = sorted(rng.sample(range(n // 20, n * 9 // 10), kills)) if kills else []
    worker = start()
    made = 0
    try:
        for point in points:
            await until(lambda p=point, w=worker: len(done.counts) >= p or not w.running,  # type: ignore[misc]
                        f"{point} tasks done before a kill", timeout=120)
            await asyncio.sleep(rng.uniform(0, 0.05))
            if not worker.running:
                break  # the run ended before this point: report fewer kills, never fake one
            worker.kill()
            await worker.wait()
            made += 1
            worker = start()
    except BaseException:
        await worker.close()
        raise
    return worker, made


async def http_json(port: int, path: str = "/stats") -> dict[str, Any]:
    """GET a status endpoint of a worker on 127.0.0.1 and parse its JSON."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    result: dict[str, Any] = json.loads(raw.partition(b"\r\n\r\n")[2])
    return result
