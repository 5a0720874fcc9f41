"""The Cassandra task store: its CQL checked always, the contract run on the in-memory fake
session, and against a real server when ``TASK_TEST_CASSANDRA=host:port`` is set."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from task.errors import ConfigError, LedgerError
from task.flow import store_cassandra_schema as schema
from task.flow.store import Event, TaskEvent, TaskStore, day_of, open_store
from task.flow.store_cassandra import CassandraTaskStore, shard_of
from task.ledger.cassandra_session import CassandraOptions, SharedSession
from tests.flow.store_contract import StoreContract
from tests.ledger.cql import Statement, Table, parse_statement, parse_table
from tests.ledger.fake_cassandra import FakeCluster, FakeSession

SERVER = os.environ.get("TASK_TEST_CASSANDRA", "")
TABLES: dict[str, Table] = {t.name: t for t in map(parse_table, schema.TABLES.values())}
STATEMENTS: dict[str, Statement] = {n: parse_statement(s) for n, s in schema.STATEMENTS.items()}


class DayFakeSession(FakeSession):
    """The ledger's fake session, plus what the store needs beyond the ledger: deleting a
    whole partition (a day's events, alerts, files) with its partition key alone."""

    def _delete(self, st: Statement, params: list[Any]) -> list[dict[str, Any]]:
        table = self._table(st.table)
        if {c.column for c in st.where} == set(table.partition_key):
            where = {c: v for c, _, v in self._bound(st.where, params)}
            self.data.get(st.table, {}).pop(tuple(where[c] for c in table.partition_key), None)
            return []
        return super()._delete(st, params)


@pytest.mark.parametrize("name", sorted(schema.STATEMENTS))
def test_statement_restricts_the_full_partition_key(name: str) -> None:
    statement = STATEMENTS[name]
    table = TABLES[statement.table]
    if statement.verb == "INSERT":
        assert set(table.partition_key + table.clustering) <= set(statement.columns)
        return
    equal = {c.column for c in statement.where if c.op == "="}
    assert set(table.partition_key) <= equal, f"{name} does not restrict {table.partition_key}"
    if statement.verb == "DELETE":  # one row, or a whole partition (one tombstone), no range
        assert equal in (set(table.partition_key), set(table.partition_key + table.clustering))
    assert all(c.op == "=" for c in statement.where) or statement.verb == "SELECT"


@pytest.mark.parametrize("name", sorted(schema.STATEMENTS))
def test_statement_columns_exist_in_the_schema(name: str) -> None:
    statement = STATEMENTS[name]
    columns = TABLES[statement.table].columns
    used = [c for c in statement.columns if c != "count(*)"]
    used += [c.column for c in statement.where + statement.conditions]
    assert set(used) <= set(columns), f"{name}: {set(used) - set(columns)} not in {statement.table}"
    if statement.verb == "INSERT":
        assert len(statement.columns) == len(statement.values)


def test_no_filtering_no_transactions_and_stable_shards() -> None:
    every = [*schema.STATEMENTS.values(), *schema.TABLES.values()]
    assert not [text for text in every if "ALLOW FILTERING" in text.upper()]
    assert not [text for text in schema.STATEMENTS.values() if " IF " in text]
    # crc32: the same shard in every process and version, so a day's events are found again
    assert [shard_of(id) for id in ("a", "task-1", "")] == [3, 7, 0]


def fake_store(session: FakeSession) -> CassandraTaskStore:
    store = CassandraTaskStore(CassandraOptions.from_url("cassandra://fake/ks"))
    store._shared = SharedSession(("fake",), FakeCluster(), session, users=1)
    return store


async def initialised() -> CassandraTaskStore:
    store = fake_store(DayFakeSession.blank())
    line = await store.init_schema()
    assert "flow task store ready" in line and "schema version 1" in line
    assert await store.init_schema()  # twice is fine
    return store


class TestCassandraStoreLogic(StoreContract):
    """The contract on the in-memory fake: day partitions, shards, the task-day index, the
    fold in the client and the clean-up, with the driver's part stubbed."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[TaskStore]:
        store = await initialised()
        try:
            yield store
        finally:
            await store.close()


async def test_a_keyspace_without_the_flow_tables_says_how_to_create_them() -> None:
    store = fake_store(DayFakeSession.blank())
    with pytest.raises(LedgerError, match="no flow task store tables.*taskbus ledger init --ledger "
                                          "cassandra://fake:9042/ks"):
        await store.days()


async def test_a_newer_flow_schema_is_refused() -> None:
    store = await initialised()
    session = store._shared.session  # type: ignore[union-attr]
    session.data["flow_store_schema"][(schema.SCOPE,)][()]["version"] = 9
    store._statements = None
    with pytest.raises(LedgerError, match="version 9, newer than this taskbus uses"):
        await store.days()


async def test_a_late_event_joins_its_task_s_day_in_another_process() -> None:
    # Given a task recorded by one flow process just before midnight
    first = await initialised()
    day = 1_800_000_000 - 1_800_000_000 % 86400
    await first.record([TaskEvent("a", "load", "", Event.CREATED, day - 60)])
    # When another process (same keyspace, no cache) records its done after midnight
    second = fake_store(first._shared.session)  # type: ignore[union-attr]
    second._statements = first._statements
    await second.record([TaskEvent("a", "load", "", Event.DONE, day + 60, result="complete")])
    # Then the task is one row on its first day, done, and the next day has no task
    (row,) = await second.tasks((await second.days())[0])
    assert (row.running, row.result, row.day.isoformat()) == (False, "complete", "2027-01-14")
    assert len(await second.days()) == 1


def test_urls() -> None:
    store = open_store("cassandra://h1,h2:9042/flow?consistency=ONE")
    assert isinstance(store, CassandraTaskStore) and store.options.keyspace == "flow"
    with pytest.raises(ConfigError, match="not a Cassandra keyspace name"):
        open_store("cassandra://h:9042/bad-name")
    with pytest.raises(ConfigError, match="unknown option"):
        open_store("cassandra://h:9042/ks?shards=3")


@pytest.mark.cassandra
@pytest.mark.skipif(not SERVER, reason="set TASK_TEST_CASSANDRA=host:port to run against Cassandra")
class TestCassandraStore(StoreContract):
    url = f"cassandra://{SERVER}/taskbus_test?consistency=ONE"

    @pytest.fixture(autouse=True)
    async def _schema(self) -> AsyncIterator[None]:
        # the keyspace outlives the test: each test gets days of its own
        self.shift = random.randrange(1, 3650)
        async with open_store(self.url) as store:  # type: ignore[attr-defined]
            await store.init_schema("1")
        yield

    def make_store(self) -> TaskStore:
        return open_store(self.url)


async def two_replicas(**options: float) -> tuple[CassandraTaskStore, CassandraTaskStore]:
    first = await initialised()
    second = fake_store(first._shared.session)  # type: ignore[union-attr]
    for store in (first, second):
        for name, value in options.items():
            setattr(store, name, value)
    return first, second


async def test_a_day_already_read_is_caught_up_with_the_new_rows_only() -> None:
    # Given a console's flow replica that has read a day, and another replica recording
    console, recorder = await two_replicas(cache_seconds=0)
    day = 1_800_000_000 - 1_800_000_000 % 86400
    await recorder.record([TaskEvent(f"t{n}", "load", "", Event.CREATED, day + n) for n in range(20)])
    assert await console.count_tasks(day_of(day)) == 20
    session = console._shared.session  # type: ignore[union-attr]
    session.executed.clear()
    # When the other replica records more, a little behind the newest row the console read
    await recorder.record([TaskEvent("t3", "load", "", Event.DONE, day + 3, result="complete"),
                           TaskEvent("late", "load", "", Event.CREATED, day + 10)])
    rows = await console.tasks(day_of(day), limit=100)
    # Then the console sees both, and read only the rows since its margin, not the day again
    assert len(rows) == 21 and next(r for r in rows if r.id == "t3").result == "complete"
    reads = [q for q in session.executed if "FROM ks.flow_events" in q]
    assert reads and all("at >= ?" in q for q in reads)
    # And reading again with nothing new folds nothing twice
    assert await console.count_tasks(day_of(day)) == 21
    assert await console.count_tasks(day_of(day), running=False) == 1


async def test_a_row_behind_the_margin_is_found_at_the_full_refresh() -> None:
    console, recorder = await two_replicas(cache_seconds=0)
    day = 1_800_000_000 - 1_800_000_000 % 86400
    await recorder.record([TaskEvent("a", "load", "", Event.CREATED, day + 7200)])
    assert await console.count_tasks(day_of(day)) == 1
    # another replica records an event an hour behind: beyond the view's 5-minute margin
    await recorder.record([TaskEvent("b", "load", "", Event.CREATED, day + 3600)])
    assert await console.count_tasks(day_of(day)) == 1
    console.full_refresh = 0
    assert await console.count_tasks(day_of(day)) == 2


async def test_a_big_day_is_folded_in_a_thread_with_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from task.flow import store_cassandra

    console, recorder = await two_replicas(cache_seconds=0)
    day = 1_800_000_000 - 1_800_000_000 % 86400
    await recorder.record([TaskEvent(f"t{n}", "load", "", Event.CREATED, day + n) for n in range(30)])
    inline = await console.tasks(day_of(day), limit=100)
    monkeypatch.setattr(store_cassandra, "_FOLD_IN_THREAD", 10)
    console.full_refresh = 0
    assert await console.tasks(day_of(day), limit=100) == inline
