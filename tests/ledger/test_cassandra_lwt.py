"""Cassandra lightweight transactions that time out after they were applied.

A conditional write (``INSERT ... IF NOT EXISTS``, ``UPDATE ... IF``) whose reply timed out
may have been applied; run again, it answers ``[applied] = False`` with our own row. Taken
at its word, ``created`` says "already known", cron skips the send and the task is lost. So
the driver must never retry one (the retry policy, with the driver's own classes), and when
a run is repeated anyway, the ledger must recognise its own row (the driver's ResultSet
rows, from ``fake_cassandra``).
"""

from __future__ import annotations

import asyncio

from cassandra import ConsistencyLevel, WriteType  # type: ignore[import-untyped]
from cassandra.policies import RetryPolicy  # type: ignore[import-untyped]
from cassandra.query import SimpleStatement  # type: ignore[import-untyped]

from task.ledger.cassandra import CassandraLedger
from task.ledger.cassandra_session import CassandraOptions, RetryTimeouts, SharedSession
from task.task import Task
from tests.ledger.contract import Clock
from tests.ledger.fake_cassandra import FakeCluster, FakeSession

QUORUM = ConsistencyLevel.LOCAL_QUORUM


def _ledger(session: FakeSession, clock: Clock | None = None) -> CassandraLedger:
    ledger = CassandraLedger(CassandraOptions.from_url("cassandra://fake/ks"), clock=clock or Clock())
    ledger._shared = SharedSession(("fake",), FakeCluster(), session, users=1)
    return ledger


def test_the_retry_policy_never_retries_a_lightweight_transaction() -> None:
    policy = RetryTimeouts(retries=3)
    lwt = SimpleStatement("INSERT ... IF NOT EXISTS", is_idempotent=False)
    upsert = SimpleStatement("INSERT ...", is_idempotent=True)
    # a Paxos write that timed out is handed to the ledger, never run again
    assert policy.on_write_timeout(lwt, QUORUM, WriteType.CAS, 2, 1, 0) == (RetryPolicy.RETHROW, None)
    # even if a conditional statement were marked idempotent by mistake
    assert policy.on_write_timeout(upsert, QUORUM, WriteType.CAS, 2, 1, 0) == (RetryPolicy.RETHROW, None)
    # the commit phase of a transaction reports SIMPLE: the statement's mark decides
    assert policy.on_write_timeout(lwt, QUORUM, WriteType.SIMPLE, 2, 1, 0) == (RetryPolicy.RETHROW, None)
    assert policy.on_request_error(lwt, QUORUM, ConnectionError("reset"), 0) == (RetryPolicy.RETHROW, None)
    # plain upserts and reads are still retried, up to ``retries`` times
    assert policy.on_write_timeout(upsert, QUORUM, WriteType.SIMPLE, 2, 1, 0) == (RetryPolicy.RETRY, QUORUM)
    assert policy.on_write_timeout(upsert, QUORUM, WriteType.SIMPLE, 2, 1, 3) == (RetryPolicy.RETHROW, None)
    assert policy.on_read_timeout(upsert, QUORUM, 2, 1, False, 0) == (RetryPolicy.RETRY, QUORUM)
    # a coordinator refusing up front ran nothing: another host may take any statement
    assert policy.on_unavailable(lwt, QUORUM, 2, 1, 0) == (RetryPolicy.RETRY_NEXT_HOST, None)


async def test_the_ledger_prepares_its_conditional_statements_non_idempotent() -> None:
    ledger = _ledger(FakeSession())
    _, statements = await ledger._ready()
    marked = {name for name, statement in statements.items() if not statement.is_idempotent}
    assert marked == {"index_add", "record_claim", "schedule_take", "schedule_index_take"}
    assert statements["record_claimed"].consistency_level == ConsistencyLevel.LOCAL_SERIAL
    await ledger.close()


async def test_a_created_whose_insert_ran_twice_is_still_new_and_recorded() -> None:
    # Given an INSERT ... IF NOT EXISTS that is applied, then run again (a retry after a timeout)
    session = FakeSession(rerun=lambda cql: "IF NOT EXISTS" in cql)
    ledger = _ledger(session)
    task = Task.new("t", "x", id="a")
    # When the taskmaster records a new task
    new = await ledger.created(task)
    # Then the second run's "not applied" is recognised as our own row: the task is new
    assert new is True
    # And its record exists, so recover can find it if it is lost
    record = await ledger.find("t", "a")
    assert record is not None and record.task.id == "a"
    # And a task that really exists already is still refused
    session.rerun = lambda cql: False
    assert await ledger.created(task) is False
    await ledger.close()


async def test_a_claim_whose_update_ran_twice_is_still_ours() -> None:
    session = FakeSession(rerun=lambda cql: "IF claim_until" in cql)
    clock = Clock()
    ledger = _ledger(session, clock)
    await ledger.created(Task.new("t", "x", id="a"))
    clock.advance(60)
    # Given a claim applied and then run again, which answers with the row it wrote
    # Then the claim is ours: the task is resent once, not left for the claim's ttl
    assert await ledger.claim("t", "a", "r1", 30, older_than=30) is True
    record = await ledger.find("t", "a")
    assert record is not None and (record.owner, record.attempts) == ("r1", 1)
    # And the claim still holds against everyone, its holder too, until its ttl passes
    assert await ledger.claim("t", "a", "r1", 30, older_than=0) is False
    await ledger.close()


async def test_another_owners_claim_at_the_same_instant_is_not_taken_for_ours() -> None:
    # Given two replicas claiming one record at the same instant with the same ttl, so the
    # loser's refused update returns exactly the values it meant to write
    session = FakeSession(rerun=lambda cql: "IF claim_until" in cql)
    clock = Clock()
    first, second = _ledger(session, clock), _ledger(session, clock)
    await first.created(Task.new("t", "x", id="a"))
    clock.advance(60)
    won = await asyncio.gather(*(ledger.claim("t", "a", f"r{i}", 30, older_than=30)
                                 for i, ledger in enumerate((first, second))))
    # Then the owner tells them apart: exactly one resends the task
    assert sorted(won) == [False, True]
    await first.close()
    await second.close()
