"""``task.Client`` on the memory and file buses, its done-task routing, delays and cancel."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task import Client, Task
from task.bus.memory import MemoryBroker
from task.delayed import CancelOutcome
from task.done_router import DoneRouter
from task.errors import BusError, ConfigError
from task.ledger.memory import MemoryLedger
from tests.client_contract import ClientContract


class TestClientOnMemory(ClientContract):
    crosses_loops = False

    @pytest.fixture(autouse=True)
    def _url(self) -> None:
        self.url = self.worker_url = "memory:client-" + uuid.uuid4().hex[:8]


class TestClientOnFiles(ClientContract):
    @pytest.fixture(autouse=True)
    def _url(self, tmp_path: Path) -> None:
        self.url = f"file:{tmp_path}/?poll=10ms"
        self.worker_url = f"file:{tmp_path}/?follow=1&poll=10ms"


# ---------------------------------------------------------------- routing, without a bus


async def test_done_tasks_of_ids_nobody_waits_for_are_dropped_and_kept_ones_are_bounded() -> None:
    router = DoneRouter(keep=2)
    router.route(Task.new("t", "", id="stranger"))
    for id in ("a", "b", "c"):
        router.expect(id)
    for id in ("a", "b", "c"):
        router.route(Task.new("t", "", id=id))

    with pytest.raises(TimeoutError):
        await router.wait("stranger", timeout=0)  # nobody waited: dropped
    with pytest.raises(TimeoutError):
        await router.wait("a", timeout=0)  # over the bound: the oldest is forgotten
    assert (await router.wait("b", timeout=0)).id == "b"
    assert (await router.wait("c", timeout=0)).id == "c"
    with pytest.raises(TimeoutError):
        await router.wait("c", timeout=0)  # taken: kept no longer


async def test_closing_the_router_fails_waits_and_ends_followers() -> None:
    router = DoneRouter()
    waiting = asyncio.ensure_future(router.wait("x"))
    follow = router.follow()
    following = asyncio.ensure_future(anext(follow, None))
    router.close(BusError("gone"))
    with pytest.raises(BusError, match="gone"):
        await waiting
    assert await following is None


# ---------------------------------------------------------------- delays, cancel, misuse


async def test_a_delayed_send_is_held_by_the_ledger_until_cancelled() -> None:
    url = "memory:client-" + uuid.uuid4().hex[:8]
    ledger = MemoryLedger()
    async with Client(url, ledger=ledger) as client:
        sent = await client.send("echo", "later", delay=timedelta(minutes=15))
        assert sent.get_meta("run_at")  # the due time travels with the task
        assert MemoryBroker.named(url[len("memory:"):]).bodies("echo") == []  # not sent yet
        cancelled = await client.cancel(sent.id)
        again = await client.cancel(sent.id)
    assert cancelled.outcome is CancelOutcome.CANCELLED
    assert again.outcome is CancelOutcome.UNKNOWN


async def test_a_send_records_the_task_as_created_in_the_ledger() -> None:
    ledger = MemoryLedger()
    async with Client("memory:client-" + uuid.uuid4().hex[:8], ledger=ledger) as client:
        sent = await client.send("echo", "now")
    record = await ledger.find("echo", sent.id)
    assert record is not None and record.task.id == sent.id


async def test_a_delay_without_native_delay_or_ledger_is_one_clear_error() -> None:
    async with Client("memory:client-" + uuid.uuid4().hex[:8]) as client:
        with pytest.raises(ConfigError, match="ledger"):
            await client.send("echo", "later", at=datetime.now(UTC) + timedelta(hours=1))
        with pytest.raises(ConfigError, match="ledger"):
            await client.cancel("some-id")


async def test_a_closed_or_unopened_client_says_how_to_use_it(tmp_path: Path) -> None:
    client = Client(f"file:{tmp_path}/")
    with pytest.raises(ConfigError, match="async with"):
        await client.send("echo", "x")
    with pytest.raises(ConfigError, match="file:-"):
        await Client("file:-").open()
    async with client:
        pass
    with pytest.raises(ConfigError, match="closed"):
        await client.send("echo", "x")


async def test_wait_times_out_with_the_id_in_the_message(tmp_path: Path) -> None:
    async with Client(f"file:{tmp_path}/?poll=10ms") as client:
        with pytest.raises(TimeoutError, match="nobody-runs-this"):
            await client.wait("nobody-runs-this", timeout=0)


async def test_a_follower_that_falls_behind_loses_the_oldest_done_tasks_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("task.done_router.FOLLOWER_BACKLOG", 2)
    router = DoneRouter()
    follow = router.follow()
    for id in ("a", "b", "c"):
        router.route(Task.new("t", "", id=id))
    router.close(BusError("closed"))
    assert [t.id async for t in follow] == ["b", "c"]
    assert router.dropped == 1


async def test_a_broadcast_is_neither_delayed_nor_waited_for_as_one_task() -> None:
    async with Client("memory:client-" + uuid.uuid4().hex[:8]) as client:
        with pytest.raises(ConfigError, match="cannot be delayed"):
            await client.send("reload", scope="all", delay=60)
        plain = await client.send("reload")
        with pytest.raises(ConfigError, match="scope='all'"):
            await client.wait_all(plain.id, timeout=0.1)
        # a broadcast nobody answers: wait_all returns what came in time, here nothing
        sent = await client.send("reload", scope="all")
        assert await client.wait_all(sent.id, timeout=0.05) == []
