"""The one app lifecycle: parts opened in order and closed in reverse, the status server
around the work, the ledger closed last, and nothing left open when a step fails."""

from __future__ import annotations

import asyncio
import logging

import pytest

from task.apps.lifecycle import Lifecycle, LifecycleApp, wait_or_stop
from task.ledger.memory import MemoryLedger
from tests.apps.status import get_stats
from tests.servers.ports import free_port

log = logging.getLogger("tests.lifecycle")


class Part:
    """A part that writes what happens to it into a shared journal, and may fail."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False,
                 fail_stop: bool = False) -> None:
        self.name, self.journal = name, journal
        self.fail_start, self.fail_stop = fail_start, fail_stop

    async def start(self) -> None:
        if self.fail_start:
            raise ConnectionError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.fail_stop:
            raise ConnectionError(f"{self.name} cannot stop")


async def test_parts_open_in_order_close_in_reverse_and_the_ledger_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    ledger = MemoryLedger()
    life = Lifecycle("demo", dict, logger=log, parts=[Part("consumer", journal), None,
                                                     Part("producer", journal)],
                     ledger=ledger)
    with caplog.at_level(logging.INFO, "tests.lifecycle"):
        await life.open({"bus": "memory:x", "ledger": ""})
        await life.open({"bus": "memory:x"})  # idempotent
    assert journal == ["start consumer", "start producer"]
    assert caplog.messages == ["demo starting: bus=memory:x"]
    await life.close()
    await life.close()  # idempotent
    assert journal[2:] == ["stop producer", "stop consumer"]
    assert ledger._closed


async def test_a_part_that_cannot_start_leaves_nothing_open() -> None:
    journal: list[str] = []
    ledger = MemoryLedger()
    life = Lifecycle("demo", dict, logger=log, ledger=ledger,
                     parts=[Part("consumer", journal), Part("producer", journal, fail_start=True)])
    with pytest.raises(ConnectionError, match="producer cannot start"):
        await life.open()
    assert journal == ["start consumer", "stop consumer"]
    assert ledger._closed and not life.opened


async def test_every_part_is_stopped_when_one_fails_to_stop() -> None:
    journal: list[str] = []
    ledger = MemoryLedger()
    life = Lifecycle("demo", dict, logger=log, ledger=ledger,
                     parts=[Part("consumer", journal), Part("producer", journal, fail_stop=True)])
    await life.open()
    with pytest.raises(ConnectionError, match="producer cannot stop"):
        await life.close()
    assert journal[2:] == ["stop producer", "stop consumer"]
    assert ledger._closed


async def test_run_serves_status_around_a_body_as_the_worker_needs() -> None:
    # Given a body (a Launcher's run) and its stats callable, with a status port
    port = free_port()
    seen: list[dict[str, object]] = []

    async def body() -> int:
        seen.append(await get_stats(port))
        return 7

    life = Lifecycle("worker", lambda: {"tasks": 3}, logger=log, status_port=port,
                     metrics=lambda: b"tasks 3\n")
    # When it runs: the status is served while the body runs, and closed after
    assert await life.run(body) == 7
    assert seen == [{"tasks": 3}]
    with pytest.raises(OSError):
        await get_stats(port)


class Counter(LifecycleApp):
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        self.lifecycle = Lifecycle("counter", dict, logger=log, parts=[Part("producer", journal)])

    async def work(self) -> int:
        self.journal.append("work")
        return 0

    async def stop(self) -> None:
        self.journal.append("stop")

    async def closing(self) -> None:
        self.journal.append("closing")


async def test_an_app_runs_in_its_own_lifecycle_or_in_the_one_open() -> None:
    journal: list[str] = []
    assert await Counter(journal).run() == 0
    assert journal == ["start producer", "work", "stop", "closing", "stop producer"]
    journal.clear()
    async with Counter(journal) as app:
        assert await app.run() == 0
        assert journal == ["start producer", "work"]


async def test_wait_or_stop_wakes_when_stopped() -> None:
    stopping = asyncio.Event()
    waiter = asyncio.create_task(wait_or_stop(stopping, 3600))
    await asyncio.sleep(0)
    stopping.set()
    assert await asyncio.wait_for(waiter, 5) is True
    assert await wait_or_stop(asyncio.Event(), 0) is False
