"""A Cassandra keyspace made by an older taskbus upgrades in place with ``taskbus ledger init``.

The keyspaces below are created with the exact tables and statements of the code that made
them (``git show <commit>:task/ledger/cassandra_schema.py``), on the fake session, which keeps
a schema as a server does: preparing a statement on a column the keyspace lacks fails.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from cassandra import OperationTimedOut  # type: ignore[import-untyped]

from task.errors import LedgerError
from task.ledger import cassandra_schema as schema
from task.ledger.base import ScheduledTask, ScheduleKind, State
from task.ledger.cassandra import CassandraLedger
from task.ledger.cassandra_session import CassandraOptions, SharedSession, execute
from task.task import Task
from tests.ledger.contract import Clock
from tests.ledger.fake_cassandra import FakeCluster, FakeSession

SERVER = os.environ.get("TASK_TEST_CASSANDRA", "")

_RECORD_OPTIONS = " WITH gc_grace_seconds = 21600 AND compaction = {'class': 'LeveledCompactionStrategy'}"

#: the tables before the schema was versioned and before task_index.writer (commit 6098954^)
TABLES_FIRST = (
    ("CREATE TABLE IF NOT EXISTS {ks}.task_records ("
     " task_list text, bucket bigint, id text, state text, task text, attempts int,"
     " created_at double, updated_at double, owner text, claim_until double,"
     " PRIMARY KEY ((task_list, bucket), id))" + _RECORD_OPTIONS),
    ("CREATE TABLE IF NOT EXISTS {ks}.task_index ("
     " task_list text, id text, bucket bigint,"
     " PRIMARY KEY ((task_list, id))) WITH gc_grace_seconds = 21600"),
    ("CREATE TABLE IF NOT EXISTS {ks}.task_buckets ("
     " scope text, task_list text, kind text, bucket bigint,"
     " PRIMARY KEY ((scope), task_list, kind, bucket))"),
    ("CREATE TABLE IF NOT EXISTS {ks}.task_schedule ("
     " task_list text, bucket bigint, at double, id text, task text,"
     " PRIMARY KEY ((task_list, bucket), at, id))" + _RECORD_OPTIONS),
    ("CREATE TABLE IF NOT EXISTS {ks}.schedule_index ("
     " task_list text, id text, at double,"
     " PRIMARY KEY ((task_list, id))) WITH gc_grace_seconds = 21600"),
)
#: today's keyspace before this change (commit 4d6305a): task_index has writer, no version
TABLES_TODAY = tuple(
    text.replace(" task_list text, id text, bucket bigint,", " task_list text, id text, bucket bigint, writer text,")
    for text in TABLES_FIRST)

#: the writes of that code, as it made them (none of them names a column added since)
OLD_WRITES = {
    "bucket_add": "INSERT INTO {ks}.task_buckets (scope, task_list, kind, bucket) VALUES (?, ?, ?, ?) USING TTL ?",
    "index_add": "INSERT INTO {ks}.task_index (task_list, id, bucket) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?",
    "record_put": (
        "INSERT INTO {ks}.task_records (task_list, bucket, id, state, task, attempts,"
        " created_at, updated_at, owner, claim_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', 0) USING TTL ?"),
    "schedule_put": (
        "INSERT INTO {ks}.task_schedule (task_list, bucket, at, id, task) VALUES (?, ?, ?, ?, ?) USING TTL ?"),
    "schedule_index_put": "INSERT INTO {ks}.schedule_index (task_list, id, at) VALUES (?, ?, ?) USING TTL ?",
}
INIT = "taskbus ledger init --ledger cassandra://fake:9042/ks"
TTL = 7 * 86400


def _ledger(session: FakeSession, clock: Clock) -> CassandraLedger:
    ledger = CassandraLedger(CassandraOptions.from_url("cassandra://fake/ks"), clock=clock)
    ledger._shared = SharedSession(("fake",), FakeCluster(), session, users=1)
    return ledger


async def _old_ledger_data(session: Any, now: float, keyspace: str = "ks") -> Task:
    """What the old code left: a task it created, and a retry it scheduled for ``now + 60``."""

    async def write(name: str, *params: Any) -> None:
        await execute(session, session.prepare(schema.render(OLD_WRITES[name], keyspace)), params)

    created, retry = Task.new("fetch", "a", id="c1"), Task.new("fetch", "b", id="r1")
    bucket, at = int(now // 3600), now + 60
    await write("bucket_add", "all", "fetch", "records", bucket, TTL)
    await write("index_add", "fetch", "c1", bucket, TTL)
    await write("record_put", "fetch", bucket, "c1", "created", created.to_json().decode(), 0, now, now, TTL)
    await write("bucket_add", "all", "fetch", "schedule", int(at // 3600), TTL)
    await write("schedule_put", "fetch", int(at // 3600), at, "r1", retry.to_json().decode(), TTL)
    await write("schedule_index_put", "fetch", "r1", at, TTL)
    return retry


def _version(session: FakeSession) -> int | None:
    row = session.data.get("ledger_schema", {}).get((schema.VERSION_SCOPE,), {}).get(())
    return None if row is None else int(row["version"])


@pytest.mark.parametrize(("tables", "added"), [(TABLES_TODAY, 2), (TABLES_FIRST, 3)],
                         ids=["today", "first-release"])
async def test_ledger_init_upgrades_an_older_keyspace_in_place(tables: tuple[str, ...], added: int) -> None:
    # Given a keyspace made by older code, holding a created task and a scheduled retry
    clock = Clock()
    session = FakeSession.with_schema(tables)
    retry = await _old_ledger_data(session, clock.now)
    ledger = _ledger(session, clock)
    # When this code opens it before anyone ran init: it says what to run, and changes nothing
    with pytest.raises(LedgerError, match=f"created by an older taskbus.*{INIT}"):
        await ledger.find("fetch", "c1")
    assert session.tables is not None and "topic" not in session.tables["task_schedule"].columns
    # When the operator runs ledger init
    message = await ledger.init_schema()
    # Then the missing columns are added and the version written
    assert message == (f"Cassandra keyspace ks ready with {len(schema.TABLES)} tables "
                       f"(schema version {schema.VERSION}, {added} columns added)")
    assert _version(session) == schema.VERSION
    # And the old rows read as they meant: the retry goes to its type, as a retry
    record = await ledger.find("fetch", "c1")
    assert record is not None and record.state is State.CREATED
    assert await ledger.find_scheduled("fetch", "r1") == ScheduledTask(
        retry, "fetch", clock.now + 60, "fetch", ScheduleKind.RETRY)
    assert await ledger.due("fetch", datetime.fromtimestamp(clock.now + 60, UTC), kind=ScheduleKind.DELAY) == []
    assert await ledger.due("fetch", datetime.fromtimestamp(clock.now + 60, UTC), kind=ScheduleKind.RETRY) == [
        ScheduledTask(retry, "fetch", clock.now + 60, "fetch", ScheduleKind.RETRY)]
    # And new writes use the new columns
    assert await ledger.created(Task.new("fetch", "x", id="c2")) is True
    delayed = Task.new("fetch", "d", id="d1")
    await ledger.schedule(delayed, None, datetime.fromtimestamp(clock.now + 5, UTC), topic="slow",
                          kind=ScheduleKind.DELAY)
    assert await ledger.find_scheduled("fetch", "d1") == ScheduledTask(
        delayed, "fetch", clock.now + 5, "slow", ScheduleKind.DELAY)
    await ledger.close()


async def test_ledger_init_creates_a_new_keyspace_and_is_safe_to_run_again() -> None:
    session = FakeSession.blank()
    ledger = _ledger(session, Clock())
    with pytest.raises(LedgerError, match=f"not created yet.*{INIT}"):
        await ledger.created(Task.new("t", "x", id="a"))
    ready = f"Cassandra keyspace ks ready with {len(schema.TABLES)} tables (schema version {schema.VERSION})"
    assert await ledger.init_schema("1") == ready
    assert _version(session) == schema.VERSION
    assert await ledger.created(Task.new("t", "x", id="a")) is True
    # a second init finds everything in place: no column added, no ALTER run
    session.executed.clear()
    assert await ledger.init_schema("1") == ready
    assert not [text for text in session.executed if text.startswith("ALTER")]
    await ledger.close()


async def test_an_init_that_raced_another_or_stopped_half_way_finishes_the_upgrade() -> None:
    # Given an old keyspace where another init added topic, then stopped (or is still
    # running) before kind and the version row: Cassandra DDL is not transactional
    session = FakeSession.with_schema(TABLES_TODAY)
    await execute(session, "ALTER TABLE ks.task_schedule ADD topic text")
    ledger = _ledger(session, Clock())
    # When init runs, a column already there counts as applied
    assert (await ledger.init_schema()).endswith("1 columns added)")
    assert session.tables is not None
    assert {"topic", "kind"} <= set(session.tables["task_schedule"].columns)
    assert _version(session) == schema.VERSION
    await ledger.close()


async def test_a_schema_change_that_fails_otherwise_stops_init_before_the_version() -> None:
    session = FakeSession.with_schema(TABLES_TODAY)
    session.fail = lambda text: OperationTimedOut("no reply in 10s") if text.startswith("ALTER") else None
    ledger = _ledger(session, Clock())
    with pytest.raises(LedgerError, match="OperationTimedOut"):
        await ledger.init_schema()
    assert _version(session) is None  # the next init runs the steps again
    await ledger.close()


async def test_a_keyspace_newer_than_the_code_is_refused() -> None:
    # Given a keyspace a newer taskbus upgraded
    session = FakeSession(data={}, tables=None)
    newer = _ledger(session, Clock())
    await newer.init_schema()
    session.data["ledger_schema"][(schema.VERSION_SCOPE,)][()]["version"] = schema.VERSION + 1
    ledger = _ledger(session, Clock())
    # Then this code neither reads nor writes it, and says to upgrade taskbus
    with pytest.raises(LedgerError, match=f"version {schema.VERSION + 1}, newer .* upgrade taskbus"):
        await ledger.find("t", "a")
    # And ledger init does not lower the version or change the schema
    session.executed.clear()
    with pytest.raises(LedgerError, match="upgrade taskbus"):
        await ledger.init_schema()
    assert _version(session) == schema.VERSION + 1
    assert not [text for text in session.executed if text.startswith(("ALTER", "INSERT"))]
    await newer.close()
    await ledger.close()


async def test_a_keyspace_with_an_older_version_row_says_to_run_init() -> None:
    session = FakeSession.with_schema(TABLES_TODAY + (schema.TABLES["ledger_schema"],), version=2)
    ledger = _ledger(session, Clock())
    with pytest.raises(LedgerError, match=f"version 2, older than this taskbus uses \\({schema.VERSION}\\).*{INIT}"):
        await ledger.stats("t")
    assert (await ledger.init_schema()).endswith("2 columns added)")
    assert (await ledger.stats("t")).scheduled == 0
    await ledger.close()


def test_every_column_added_since_the_first_release_is_in_a_migration() -> None:
    first = {name: set(cols) for name, cols in _columns(TABLES_FIRST).items()}
    now = _columns(tuple(schema.TABLES.values()))
    added = {f"ALTER TABLE {{ks}}.{name} ADD {column} {kind}"
             for name, cols in now.items() if name in first
             for column, kind in cols.items() if column not in first[name]}
    assert added == {text for step in schema.MIGRATIONS for text in step.ddl}
    assert [step.version for step in schema.MIGRATIONS] == list(range(1, schema.VERSION + 1))


def _columns(creates: tuple[str, ...]) -> dict[str, dict[str, str]]:
    from tests.ledger.cql import parse_table

    return {t.name: t.columns for t in map(parse_table, creates)}


@pytest.mark.cassandra
@pytest.mark.skipif(not SERVER, reason="set TASK_TEST_CASSANDRA=host:port to run against Cassandra")
async def test_ledger_init_upgrades_todays_keyspace_on_a_server() -> None:
    # Given a keyspace made afresh with today's tables and rows, as the code before versioning
    ks = "taskbus_upgrade_test"
    clock = Clock()
    ledger = CassandraLedger(CassandraOptions.from_url(
        f"cassandra://{SERVER}/{ks}?consistency=ONE&serial_consistency=SERIAL"), clock=clock)
    try:
        session = (await ledger._session()).session
        await execute(session, f"DROP KEYSPACE IF EXISTS {ks}")
        await execute(session, schema.render(schema.KEYSPACE, ks).replace(
            "{replication}", schema.replication_map("1")))
        for text in TABLES_TODAY:
            await execute(session, schema.render(text, ks))
        retry = await _old_ledger_data(session, clock.now, ks)
        # Then the ledger refuses it until ledger init upgrades it, which a server accepts
        with pytest.raises(LedgerError, match="taskbus ledger init --ledger"):
            await ledger.find("fetch", "c1")
        assert (await ledger.init_schema("1")).endswith("2 columns added)")
        assert (await ledger.init_schema("1")).endswith(f"(schema version {schema.VERSION})")
        expected = ScheduledTask(retry, "fetch", clock.now + 60, "fetch", ScheduleKind.RETRY)
        assert await ledger.find_scheduled("fetch", "r1") == expected
        assert await ledger.due("fetch", clock.at(60), kind=ScheduleKind.RETRY) == [expected]
        assert await ledger.find("fetch", "c1") is not None
    finally:
        await ledger.close()
