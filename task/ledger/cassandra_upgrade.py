"""Creating and upgrading a Cassandra ledger's keyspace in place, and checking it on open.

``taskbus ledger init`` is the only writer of schema: concurrent schema changes from many
processes disagree, so a ledger never alters its keyspace on first use. ``upgrade`` creates
what is missing, runs the migrations newer than the keyspace's version row (each statement
may find itself applied already: Cassandra DDL is not transactional and two ``init`` may
race) and writes the row last, so an interrupted upgrade is simply run again. ``check``
runs before a ledger prepares its statements: an older keyspace would fail them with an
unknown column, a newer one may hold rows this code would misread, and either way the user
is told which command fixes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cassandra import ConsistencyLevel, InvalidRequest  # type: ignore[import-untyped]

from task.errors import LedgerError
from task.ledger import cassandra_schema as cql
from task.ledger.cassandra_session import CassandraOptions, execute

__all__ = ["check", "ledger_url", "upgrade"]

logger = logging.getLogger(__name__)


def ledger_url(options: CassandraOptions) -> str:
    """The ledger's URL without credentials or options, for the commands error messages give."""
    return f"cassandra://{','.join(options.hosts)}:{options.port}/{options.keyspace}"


async def _statement(session: Any, options: CassandraOptions, name: str, level: str) -> Any:
    statement = await asyncio.to_thread(session.prepare, cql.render(cql.STATEMENTS[name], options.keyspace))
    statement.consistency_level = ConsistencyLevel.name_to_value[level]
    return statement


async def _version(session: Any, options: CassandraOptions) -> int:
    """The version row of the keyspace; 0 when it has none (created before versioning, or an
    ``init`` that did not finish)."""
    statement = await _statement(session, options, "version_get", options.read_consistency)
    row = (await execute(session, statement, (cql.VERSION_SCOPE,))).one()
    return 0 if row is None or row.get("version") is None else int(row["version"])


def _refuse_newer(found: int, options: CassandraOptions) -> None:
    if found > cql.VERSION:
        raise LedgerError(
            f"Cassandra keyspace {options.keyspace} has ledger schema version {found}, newer than "
            f"this taskbus knows ({cql.VERSION}): upgrade taskbus (pip install -U 'taskbus[cassandra]')"
        )


async def check(session: Any, options: CassandraOptions) -> None:
    """Refuse a keyspace this code cannot use as it is.

    Raises:
        LedgerError: the keyspace or its version row is missing or older than this code
            (run ``taskbus ledger init``), newer (upgrade taskbus), or cannot be read.
    """
    init = f"taskbus ledger init --ledger {ledger_url(options)}"
    try:
        found = await _version(session, options)
    except InvalidRequest as err:  # preparing: no such keyspace or table
        raise LedgerError(
            f"Cassandra keyspace {options.keyspace} has no ledger schema (not created yet, or "
            f"created by an older taskbus: {err}); create or upgrade it with: {init}") from err
    if found < cql.VERSION:
        raise LedgerError(
            f"Cassandra keyspace {options.keyspace} has ledger schema version {found}, older than "
            f"this taskbus uses ({cql.VERSION}); upgrade it in place with: {init}")
    _refuse_newer(found, options)


async def _apply(session: Any, ddl: str) -> bool:
    """Run one migration statement; False when it was applied already (by an earlier or a
    concurrent ``init``)."""
    try:
        await execute(session, ddl)
    except LedgerError as err:
        cause = err.__cause__
        if isinstance(cause, InvalidRequest) and any(text in str(cause) for text in cql.ALREADY_THERE):
            logger.info("%s: already applied (%s)", ddl, cause)
            return False
        raise
    return True


async def upgrade(session: Any, options: CassandraOptions, replication: str = "") -> str:
    """Create the keyspace and tables, or bring an older keyspace to ``VERSION``; returns a
    line for the operator. Safe to run twice, and concurrently.

    Raises:
        ConfigError: a bad replication spec or keyspace name.
        LedgerError: Cassandra refused the schema, or the keyspace is newer than this code.
    """
    ks = options.keyspace
    keyspace = cql.render(cql.KEYSPACE, ks).replace("{replication}", cql.replication_map(replication))
    await execute(session, keyspace)
    await execute(session, cql.render(cql.TABLES["ledger_schema"], ks))
    found = await _version(session, options)
    _refuse_newer(found, options)
    for name, text in cql.TABLES.items():
        if name != "ledger_schema":
            await execute(session, cql.render(text, ks))
    added = 0
    for step in cql.steps_after(found):
        applied = [await _apply(session, cql.render(text, ks)) for text in step.ddl]
        added += sum(applied)
        if any(applied):
            logger.info("Cassandra keyspace %s upgraded to ledger schema version %d: %s", ks,
                        step.version, step.what)
    if found < cql.VERSION:
        put = await _statement(session, options, "version_put", options.write_consistency)
        await execute(session, put, (cql.VERSION_SCOPE, cql.VERSION))
    columns = f", {added} columns added" if added else ""
    return (f"Cassandra keyspace {ks} ready with {len(cql.TABLES)} tables "
            f"(schema version {cql.VERSION}{columns})")
