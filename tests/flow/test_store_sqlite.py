"""The SQLite task store: the contract, living in the ledger's file, its schema version, URLs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from task.errors import ConfigError, LedgerError, UnknownBackendError
from task.flow import store_sqlite_schema
from task.flow.store import Event, TaskEvent, TaskStore, open_store
from task.flow.store_sqlite import SqliteTaskStore
from task.ledger.registry import open_ledger
from task.task import Task
from tests.flow.store_contract import StoreContract


class TestSqliteStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def make_store(self) -> TaskStore:
        return open_store(f"sqlite:{self.dir / 'sub' / 'ledger.db'}")


async def test_the_store_shares_the_ledger_file_without_touching_its_version(tmp_path: Path) -> None:
    # Given a ledger and a store on the same URL, as `taskbus flow` runs them by default
    url = f"sqlite:{tmp_path / 'ledger.db'}"
    async with open_ledger(url) as ledger, open_store(url) as store:  # type: ignore[attr-defined]
        task = Task.new("load", "x")
        assert await ledger.created(task)
        await store.record([TaskEvent.of(task, Event.CREATED, 1_800_000_000.0)])
        assert (await ledger.find("load", task.id)) is not None
    # Then the ledger's PRAGMA user_version is the ledger's, and the store's version is its own
    conn = sqlite3.connect(tmp_path / "ledger.db")
    (user_version,) = conn.execute("PRAGMA user_version").fetchone()
    (flow_version,) = conn.execute("SELECT version FROM flow_schema").fetchone()
    conn.close()
    from task.ledger import sqlite_schema
    assert (user_version, flow_version) == (sqlite_schema.VERSION, store_sqlite_schema.VERSION)
    # And the ledger's read-only commands still open it
    async with open_ledger(url, create=False) as reader:  # type: ignore[attr-defined]
        assert await reader.task_lists() == ["load"]


async def test_events_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'store.db'}"
    async with open_store(url) as store:  # type: ignore[attr-defined]
        await store.record([TaskEvent("a", "load", "", Event.CREATED, 1_800_000_000.0)])
    async with open_store(url) as store:  # type: ignore[attr-defined]
        assert [e.id for e in await store.chain("a")] == ["a"]
        assert (await store.about())["bytes"] > 0


async def test_a_newer_flow_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with open_store(f"sqlite:{path}") as store:  # type: ignore[attr-defined]
        await store.days()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE flow_schema SET version = 99")
    conn.commit()
    conn.close()
    async with open_store(f"sqlite:{path}") as store:  # type: ignore[attr-defined]
        with pytest.raises(LedgerError, match="flow schema version 99.*upgrade taskbus"):
            await store.days()


def test_urls() -> None:
    store = open_store("sqlite:///abs/l.db?busy_timeout=250ms")
    assert isinstance(store, SqliteTaskStore) and store.path == "/abs/l.db"
    assert open_store("sqlite:./a/l.db").path == "./a/l.db"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="no file"):
        open_store("sqlite:")
    with pytest.raises(ConfigError, match="busy_tmeout"):
        open_store("sqlite:l.db?busy_tmeout=1s")
    with pytest.raises(UnknownBackendError, match="valid stores: cassandra, memory, sqlite"):
        open_store("postgres://h/db")
    with pytest.raises(ConfigError, match="no scheme"):
        open_store("ledger.db")


async def test_two_flow_replicas_on_one_file_fold_each_other_s_events(tmp_path: Path) -> None:
    # Given two flow processes' stores on one file
    url = f"sqlite:{tmp_path / 'ledger.db'}"
    at = 1_800_000_000.0
    async with open_store(url) as one, open_store(url) as two:  # type: ignore[attr-defined]
        # When one records a task's creation and the other its error, retry and completion
        await one.record([TaskEvent("a", "load", "", Event.CREATED, at)])
        await two.record([TaskEvent("a", "load", "", Event.DONE, at + 1, result="error")])
        await one.record([TaskEvent("a", "load", "", Event.RETRIED, at + 2, attempt=1)])
        await two.record([TaskEvent("a", "load", "", Event.DONE, at + 3, result="complete")])
        # Then both see one task, done, sent twice
        for store in (one, two):
            (row,) = await store.tasks((await store.days())[0])
            assert (row.result, row.running, row.attempts) == ("complete", False, 2)
