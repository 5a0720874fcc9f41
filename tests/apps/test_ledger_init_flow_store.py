"""``taskbus ledger init`` on Cassandra also creates the ``taskbus flow`` task store's tables.

A Cassandra flow store is never created on first use (``taskbus flow`` refuses a keyspace
without its tables and names ``taskbus ledger init``), so before this an operator who ran the
command the message gave got the ledger's tables only, and flow kept refusing to start.
Runs on the in-memory fake session that the ledger and store tests use.
"""

from __future__ import annotations

import json

import pytest

from task.apps.ledger_admin import LedgerAdmin, LedgerAdminSettings
from task.flow.store_cassandra import CassandraTaskStore
from task.ledger.cassandra import CassandraLedger
from task.ledger.cassandra_session import CassandraOptions, SharedSession
from task.settings import load_settings
from tests.flow import test_store_cassandra as store_tests
from tests.ledger.fake_cassandra import FakeCluster, FakeSession


def admin_on(session: FakeSession, action: str, *flags: str, **settings: object) -> LedgerAdmin:
    """``taskbus ledger ACTION --ledger cassandra://fake/ks`` as the CLI builds it, its ledger
    and flow store on ``session`` instead of a server."""
    values = load_settings(LedgerAdminSettings, None, action=action, ledger="cassandra://fake/ks", **settings)
    admin = LedgerAdmin.from_settings(values)
    assert isinstance(admin.ledger, CassandraLedger)
    admin.ledger._shared = SharedSession(("fake",), FakeCluster(), session, users=1)
    if admin.flow_store is not None:
        assert isinstance(admin.flow_store, CassandraTaskStore)
        admin.flow_store._shared = SharedSession(("fake",), FakeCluster(), session, users=1)
    return admin


async def test_ledger_init_creates_the_flow_store_tables_too(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a cluster where nothing was ever created
    session = store_tests.DayFakeSession.blank()
    # When the operator runs ledger init, twice (it is safe to)
    for _ in range(2):
        assert await admin_on(session, "init", replication="1").run() == 0
    # Then it says both are ready, each time
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ready")[0] for line in lines] == [
        "Cassandra keyspace ks", "Cassandra keyspace ks: flow task store"] * 2, lines
    # And a flow store on that keyspace works: what it records, it reads back
    store = CassandraTaskStore(CassandraOptions.from_url("cassandra://fake/ks"))
    store._shared = SharedSession(("fake",), FakeCluster(), session, users=1)
    assert await store.days() == []
    await store.close()


async def test_ledger_init_json_names_both(capsys: pytest.CaptureFixture[str]) -> None:
    session = store_tests.DayFakeSession.blank()
    assert await admin_on(session, "init", json_output=True).run() == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is True and "flow task store ready" in printed["flow_store"]


def test_only_init_on_cassandra_opens_a_flow_store() -> None:
    assert admin_on(FakeSession(), "stats").flow_store is None
    sqlite = LedgerAdmin.from_settings(load_settings(LedgerAdminSettings, None, action="init", ledger="memory:"))
    assert sqlite.flow_store is None
