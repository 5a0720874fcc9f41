"""The Cassandra ledger: its CQL checked always, the contract run when a server is given.

``TASK_TEST_CASSANDRA=127.0.0.1:9042 pytest -m cassandra`` (deploy/cassandra/ starts one).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from cassandra import OperationTimedOut  # type: ignore[import-untyped]

from task.errors import ConfigError, LedgerError
from task.ledger import cassandra_schema as schema
from task.ledger.base import State
from task.ledger.cassandra import CassandraLedger, open_ledger
from task.ledger.cassandra_session import CassandraOptions, SharedSession
from task.task import Task
from tests.ledger.contract import Clock, LedgerContract
from tests.ledger.cql import Statement, Table, parse_statement, parse_table
from tests.ledger.fake_cassandra import FakeCluster, FakeSession
from tests.servers.ports import free_port

SERVER = os.environ.get("TASK_TEST_CASSANDRA", "")
TABLES: dict[str, Table] = {t.name: t for t in map(parse_table, schema.TABLES.values())}
STATEMENTS: dict[str, Statement] = {n: parse_statement(s) for n, s in schema.STATEMENTS.items()}


@pytest.mark.parametrize("name", sorted(schema.STATEMENTS))
def test_statement_restricts_the_full_partition_key(name: str) -> None:
    statement = STATEMENTS[name]
    table = TABLES[statement.table]
    if statement.verb == "INSERT":
        assert set(table.partition_key + table.clustering) <= set(statement.columns)
        return
    equal = {c.column for c in statement.where if c.op == "="}
    assert set(table.partition_key) <= equal, f"{name} does not restrict {table.partition_key}"
    if statement.verb in ("UPDATE", "DELETE"):  # one row at a time, never a range delete
        assert set(table.partition_key + table.clustering) == equal
    ranges = [c.column for c in statement.where if c.op != "="]
    assert set(ranges) <= set(table.clustering), f"{name} filters on a non-clustering column"


@pytest.mark.parametrize("name", sorted(schema.STATEMENTS))
def test_statement_columns_exist_in_the_schema(name: str) -> None:
    statement = STATEMENTS[name]
    columns = TABLES[statement.table].columns
    used = [c for c in statement.columns if c != "count(*)"]
    used += [c.column for c in statement.where + statement.conditions]
    assert set(used) <= set(columns), f"{name}: {set(used) - set(columns)} not in {statement.table}"
    if statement.verb == "INSERT":
        assert len(statement.columns) == len(statement.values)


def test_no_statement_or_table_allows_filtering() -> None:
    every = [*schema.STATEMENTS.values(), *schema.TABLES.values(), schema.KEYSPACE]
    assert not [text for text in every if "ALLOW FILTERING" in text.upper()]


def test_every_column_of_the_schema_is_used_by_a_statement() -> None:
    for table in TABLES.values():
        used: set[str] = set()
        for statement in STATEMENTS.values():
            if statement.table == table.name:
                used |= set(statement.columns) - {"count(*)"}
                used |= {c.column for c in statement.where + statement.conditions}
        assert used == set(table.columns), f"{table.name}: unused {set(table.columns) - used}"
    assert {s.table for s in STATEMENTS.values()} == set(TABLES)


#: writes without the TTL safety net, each with its reason
UNEXPIRING = {
    # the keyspace's schema version must outlive every row: expired, it would make a current
    # keyspace look older than the code, and every ledger would refuse to open it
    "version_put": "the schema version row",
}


def test_writes_carry_a_ttl_and_conditional_writes_are_the_lwt_ones() -> None:
    for name, statement in STATEMENTS.items():
        if statement.verb in ("INSERT", "UPDATE"):
            assert statement.ttl != (name in UNEXPIRING), f"{name} writes without the TTL safety net"
    lwt = {n for n, s in STATEMENTS.items() if s.conditions or s.if_exists or s.if_not_exists}
    assert lwt == {"index_add", "record_claim", "schedule_take", "schedule_index_take"}


def test_replication_specs() -> None:
    assert schema.replication_map("") == "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    assert "'replication_factor': 3" in schema.replication_map("3")
    assert schema.replication_map("dc1:3,dc2=2") == (
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}")
    with pytest.raises(ConfigError, match="dc1:3"):
        schema.replication_map("three")


def test_url_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_CASSANDRA_PASSWORD", "from-env")
    options = CassandraOptions.from_url(
        "cassandra://ops@h1,h2:9142/tasks?consistency=quorum&write_consistency=EACH_QUORUM"
        "&dc=eu&ttl=2d&bucket=30m&tls=1&tls_verify=0&reactor=asyncio&retries=5")
    assert (options.hosts, options.port, options.keyspace) == (("h1", "h2"), 9142, "tasks")
    assert (options.read_consistency, options.write_consistency) == ("QUORUM", "EACH_QUORUM")
    assert (options.username, options.password, options.dc) == ("ops", "from-env", "eu")
    assert (options.ttl, options.bucket, options.retries) == (2 * 86400, 1800, 5)
    assert options.tls and not options.tls_verify and options.reactor == "asyncio"
    assert "from-env" not in repr(options)
    assert CassandraOptions.from_url("cassandra://h").keyspace == "taskbus"


@pytest.mark.parametrize(("url", "problem"), [
    ("cassandra://h:9042/ks?consistency=MOST", "not a consistency level"),
    ("cassandra://h:9042/ks?serial_consistency=QUORUM", "SERIAL or LOCAL_SERIAL"),
    ("cassandra://h:9042/ks?consitency=ONE", "unknown option 'consitency'"),
    ("cassandra://h1:1,h2:2/ks", "same port"),
    ("cassandra://h:9042/bad-name", "not a Cassandra keyspace name"),
    ("cassandra://h:9042/ks?reactor=asyncore", "auto, libev or asyncio"),
])
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        open_ledger(url)


async def test_an_unreachable_cluster_is_a_ledger_error_not_a_hang() -> None:
    ledger = open_ledger(f"cassandra://127.0.0.1:{free_port()}/ks?timeout=2s&reactor=asyncio")
    try:
        with pytest.raises(LedgerError, match="cannot reach Cassandra"):
            await ledger.find("t", "x")
    finally:
        await ledger.close()


class TestCassandraLedgerLogic(LedgerContract):
    """The contract on the in-memory fake session: the ledger's buckets, index and
    transactions, with the driver's part stubbed (see fake_cassandra for what it models)."""

    def make_ledger(self, clock: Clock) -> CassandraLedger:
        ledger = CassandraLedger(CassandraOptions.from_url("cassandra://fake/ks"), clock=clock)
        ledger._shared = SharedSession(("fake",), FakeCluster(), FakeSession(), users=1)
        return ledger


async def test_outstanding_skips_young_buckets_and_forgets_empty_old_ones() -> None:
    clock = Clock()
    clock.now -= clock.now % 3600  # at the start of a bucket, so "young" does not depend on the hour
    ledger = TestCassandraLedgerLogic().make_ledger(clock)
    session = ledger._shared.session  # type: ignore[union-attr]
    await ledger.created(Task.new("t", "x", id="a"))
    await ledger.done("t", "a")
    clock.advance(3 * 3600)
    await ledger.created(Task.new("t", "x", id="b"))
    session.executed.clear()
    # The old bucket is read once, found empty and dropped; b's young bucket is not read
    assert [r.task.id async for r in ledger.outstanding("t", 600)] == []
    reads = [q for q in session.executed if "FROM ks.task_records" in q]
    assert len(reads) == 1
    assert any(q.startswith("DELETE FROM ks.task_buckets") for q in session.executed)
    session.executed.clear()
    assert [r.task.id async for r in ledger.outstanding("t", 600)] == []
    assert not [q for q in session.executed if "FROM ks.task_records" in q]
    clock.advance(3600)
    assert [r.task.id async for r in ledger.outstanding("t", 600)] == ["b"]
    await ledger.close()


@pytest.mark.cassandra
@pytest.mark.skipif(not SERVER, reason="set TASK_TEST_CASSANDRA=host:port to run against Cassandra")
class TestCassandraLedger(LedgerContract):
    url = f"cassandra://{SERVER}/taskbus_test?consistency=ONE&serial_consistency=SERIAL"

    @pytest.fixture(autouse=True)
    async def _schema(self) -> AsyncIterator[None]:
        async with open_ledger(self.url) as ledger:
            await ledger.init_schema("1")
        yield

    def make_ledger(self, clock: Clock) -> CassandraLedger:
        return CassandraLedger(CassandraOptions.from_url(self.url), clock=clock)


async def test_a_started_retried_after_its_record_write_failed_records_the_task() -> None:
    # Given a worker's started() whose index row is written, then whose record write fails
    clock = Clock()
    ledger = TestCassandraLedgerLogic().make_ledger(clock)
    session = ledger._shared.session  # type: ignore[union-attr]
    failures = [OperationTimedOut("no reply in 10s")]
    session.fail = lambda cql: failures.pop() if cql.startswith("INSERT INTO ks.task_records") and failures else None
    task = Task.new("t", "x", id="a")
    with pytest.raises(LedgerError, match="OperationTimedOut"):
        await ledger.started(task)
    # When the launcher retries it
    await ledger.started(task)
    # Then the task is recorded whole, so recover can resend it if its worker dies
    record = await ledger.find("t", "a")
    assert record is not None and (record.task, record.state) == (task, State.STARTED)
    clock.advance(60)
    assert [r.task.id async for r in ledger.outstanding("t", 30)] == ["a"]
    await ledger.close()
