"""The memory task store: the contract, and ``memory:NAME`` sharing one store per process."""

from __future__ import annotations

from task.flow.store import TaskStore, open_store
from task.flow.store_memory import MemoryTaskStore
from tests.flow.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    def make_store(self) -> TaskStore:
        return open_store("memory:")


async def test_named_stores_are_shared_in_the_process() -> None:
    a, b = open_store("memory:flow-test"), open_store("memory://flow-test")
    assert a is b and isinstance(a, MemoryTaskStore)
    assert open_store("memory:") is not open_store("memory:")
    await a.close()
    assert open_store("memory:flow-test") is not a  # a closed one is replaced


def test_run_times_read_any_rfc3339_offset_and_skip_what_is_not_one() -> None:
    from task.flow.store_fold import run_time

    assert run_time("2026-11-02T01:00:00Z", "2026-11-02T01:15:00Z") == 900.0
    assert run_time("2026-11-02T01:00:00.5+01:00", "2026-11-02T00:00:01Z") == 0.5
    assert run_time("", "2026-11-02T01:00:00Z") is None
    assert run_time("soon", "2026-11-02T01:00:00Z") is None
    assert run_time("2026-11-02T01:00:00", "2026-11-02T01:00:00Z") is None  # no offset: not RFC 3339
