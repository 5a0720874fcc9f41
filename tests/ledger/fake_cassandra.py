"""An in-memory stand-in for a cassandra-driver Session that runs the ledger's own CQL.

It understands exactly the statements ``tests/ledger/cql.py`` parses, with Cassandra's
semantics where the ledger depends on them: upserts, rows sorted by clustering key,
``IF NOT EXISTS`` returning the existing row, conditional updates and deletes returning the
current values of their condition columns when refused, ``IF EXISTS`` deletes, ``count(*)``.
TTLs are accepted and ignored. Results are the driver's own ``ResultSet`` of rows made by
its ``dict_factory``, so ``was_applied`` and ``one()`` behave as with a server. ``rerun``
runs chosen statements twice and returns the second result, as the driver's retry of a
request that timed out after it was applied does; ``fail`` makes chosen requests fail.

It keeps a schema as a server does: the DDL ``taskbus ledger init`` runs (``CREATE KEYSPACE``,
``CREATE TABLE IF NOT EXISTS``, ``ALTER TABLE ... ADD``) changes it, and preparing a
statement on a table or column it does not have raises the driver's ``InvalidRequest``, so
a keyspace of an older schema behaves as one. ``FakeSession()`` is a keyspace as this
code's ``ledger init`` leaves it; ``FakeSession.with_schema(...)`` one created by older code;
``FakeSession.blank()`` a cluster without the keyspace. It lets the contract suite exercise the
Cassandra ledger's bucket and transaction logic where no server can run; the real server
run (``TASK_TEST_CASSANDRA``) remains the proof.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cassandra import InvalidRequest  # type: ignore[import-untyped]
from cassandra.cluster import ResultSet  # type: ignore[import-untyped]
from cassandra.query import SimpleStatement, dict_factory  # type: ignore[import-untyped]

from task.ledger import cassandra_schema as schema
from tests.ledger.cql import Condition, Statement, Table, parse_statement, parse_table

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_KEYSPACE = re.compile(r"CREATE KEYSPACE IF NOT EXISTS (\w+) WITH replication = \{.*\}")
_ALTER = re.compile(r"ALTER TABLE \S+?\.(\w+) ADD (\w+) (\w+)")


def _literal(token: str, params: list[Any]) -> Any:
    if token == "?":
        return params.pop(0)
    if token.startswith("'"):
        return token.strip("'")
    return int(token)


class _Response:
    """What a ``ResultSet`` reads of the driver's ``ResponseFuture`` for one page."""

    has_more_pages = False
    _paging_state = None

    def __init__(self, text: str, names: list[str]) -> None:
        self.query = SimpleStatement(text)
        self.row_factory = dict_factory
        self._col_names = names
        self._col_types = None


def result(text: str, rows: list[dict[str, Any]]) -> ResultSet:
    """The driver's ResultSet for ``rows`` (an LWT's start with ``[applied]``)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    values = [tuple(row.get(name) for name in names) for row in rows]
    return ResultSet(_Response(text, names), dict_factory(names, values))


class FakeFuture:
    def __init__(self, result: ResultSet | None, error: BaseException | None = None) -> None:
        self._result = result
        self._error = error

    def add_callbacks(self, ok: Callable[[Any], None], fail: Callable[[BaseException], None]) -> None:
        if self._error is not None:
            fail(self._error)
        else:
            ok(self._result.current_rows)  # type: ignore[union-attr]

    def result(self) -> ResultSet:
        if self._error is not None:
            raise self._error
        return self._result


@dataclass
class FakePrepared:
    statement: Statement
    consistency_level: int = 0
    serial_consistency_level: int = 0
    is_idempotent: bool = False


def _current_tables() -> dict[str, Table]:
    return {t.name: t for t in map(parse_table, schema.TABLES.values())}


def _version_row(version: int) -> dict[str, Any]:
    return {"ledger_schema": {(schema.VERSION_SCOPE,): {(): {"scope": schema.VERSION_SCOPE, "version": version}}}}


@dataclass
class FakeSession:
    #: table -> partition key -> clustering key -> row
    data: dict[str, dict[tuple[Any, ...], dict[tuple[Any, ...], dict[str, Any]]]] = field(
        default_factory=lambda: _version_row(schema.VERSION))
    #: the keyspace's tables (None: no keyspace)
    tables: dict[str, Table] | None = field(default_factory=_current_tables)
    executed: list[str] = field(default_factory=list)
    #: statements (by their CQL) run twice, the second result returned: a driver retry
    rerun: Callable[[str], bool] = lambda text: False
    #: the error a request (by its CQL) fails with, or None to run it
    fail: Callable[[str], BaseException | None] = lambda text: None

    @classmethod
    def blank(cls) -> FakeSession:
        """A cluster where ``ledger init`` never ran."""
        return cls(data={}, tables=None)

    @classmethod
    def with_schema(cls, creates: Iterable[str], keyspace: str = "ks", version: int | None = None) -> FakeSession:
        """A keyspace made by other code: its ``CREATE TABLE`` statements (``{ks}`` filled
        in with ``keyspace``) and, if it wrote one, its version row."""
        tables = {t.name: t for t in (parse_table(schema.render(text, keyspace)) for text in creates)}
        return cls(data={} if version is None else _version_row(version), tables=tables)

    def prepare(self, text: str) -> FakePrepared:
        statement = parse_statement(text)
        if self.tables is None:
            raise InvalidRequest(f"Keyspace of {text!r} does not exist")
        table = self.tables.get(statement.table)
        if table is None:
            raise InvalidRequest(f"unconfigured table {statement.table}")
        used = {c for c in statement.columns if c != "count(*)"}
        used |= {c.column for c in statement.where + statement.conditions}
        for column in sorted(used - set(table.columns)):
            raise InvalidRequest(f"Undefined column name {column} in table {statement.table}")
        return FakePrepared(statement)

    def execute_async(self, prepared: FakePrepared | str, params: Any = None, paging_state: Any = None) -> FakeFuture:
        text = prepared if isinstance(prepared, str) else prepared.statement.text
        error = self.fail(text)
        if error is not None:
            self.executed.append(text)
            return FakeFuture(None, error)
        if isinstance(prepared, str):  # schema statements run unprepared, as the ledger does
            self.executed.append(text)
            try:
                self._schema_change(text)
            except InvalidRequest as err:
                return FakeFuture(None, err)
            return FakeFuture(result(text, []))
        statement = prepared.statement
        run = getattr(self, "_" + statement.verb.lower())
        for _ in range(2 if self.rerun(statement.text) else 1):
            self.executed.append(statement.text)
            rows = run(statement, list(params or ()))
        return FakeFuture(result(statement.text, rows))

    def _schema_change(self, text: str) -> None:
        if _KEYSPACE.fullmatch(text):
            self.tables = {} if self.tables is None else self.tables
        elif text.startswith("CREATE TABLE IF NOT EXISTS"):
            if self.tables is None:
                raise InvalidRequest(f"Keyspace of {text!r} does not exist")
            created = parse_table(text)
            self.tables.setdefault(created.name, created)
        elif m := _ALTER.fullmatch(text):
            name, column, kind = m.groups()
            table = (self.tables or {}).get(name)
            if table is None:
                raise InvalidRequest(f"unconfigured table {name}")
            if column in table.columns:  # Cassandra 3.x's words; 4.0 says "already exists"
                raise InvalidRequest(f"Invalid column name {column} because it conflicts with an existing column")
            table.columns[column] = kind
        else:
            raise AssertionError(f"schema statement not understood: {text}")

    def _table(self, name: str) -> Table:
        assert self.tables is not None and name in self.tables, f"{name} was never created"
        return self.tables[name]

    def _key(self, table: Table, where: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return tuple(where[c] for c in table.partition_key), tuple(where.get(c) for c in table.clustering)

    @staticmethod
    def _bound(conditions: list[Condition], params: list[Any]) -> list[tuple[str, str, Any]]:
        return [(c.column, c.op, _literal(c.value, params)) for c in conditions]

    @staticmethod
    def _holds(row: dict[str, Any] | None, conditions: list[tuple[str, str, Any]]) -> bool:
        return row is not None and all(
            row.get(col) is not None and _OPS[op](row[col], value) for col, op, value in conditions)

    @staticmethod
    def _refused(row: dict[str, Any] | None, conditions: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
        """A refused conditional write: ``[applied]`` and the row's condition columns."""
        seen = {} if row is None else {col: row.get(col) for col, _, _ in conditions}
        return [{"[applied]": False, **seen}]

    def _select(self, st: Statement, params: list[Any]) -> list[dict[str, Any]]:
        table = self._table(st.table)
        where = self._bound(st.where, params)
        pk = tuple(next(v for c, _, v in where if c == column) for column in table.partition_key)
        rows = [row for _, row in sorted(self.data.get(st.table, {}).get(pk, {}).items())
                if self._holds(row, [w for w in where if w[0] in table.clustering])]
        if st.columns == ["count(*)"]:
            return [{"count": len(rows)}]
        return [{c: row.get(c) for c in st.columns} for row in rows]

    def _insert(self, st: Statement, params: list[Any]) -> list[dict[str, Any]]:
        table = self._table(st.table)
        values = {c: _literal(v, params) for c, v in zip(st.columns, st.values)}
        pk, ck = self._key(table, values)
        partition = self.data.setdefault(st.table, {}).setdefault(pk, {})
        if st.if_not_exists and ck in partition:
            return [{"[applied]": False, **partition[ck]}]
        partition.setdefault(ck, {}).update(values)
        return [{"[applied]": True}] if st.if_not_exists else []

    def _update(self, st: Statement, params: list[Any]) -> list[dict[str, Any]]:
        table = self._table(st.table)
        if st.ttl:
            params.pop(0)  # USING TTL comes before SET
        sets = {c: _literal(v, params) for c, v in zip(st.columns, st.values)}
        where = {c: v for c, _, v in self._bound(st.where, params)}
        pk, ck = self._key(table, where)
        partition = self.data.setdefault(st.table, {}).setdefault(pk, {})
        if st.conditions:
            conditions = self._bound(st.conditions, params)
            if not self._holds(partition.get(ck), conditions):
                return self._refused(partition.get(ck), conditions)
            partition.setdefault(ck, dict(where)).update(sets)
            return [{"[applied]": True}]
        partition.setdefault(ck, dict(where)).update(sets)
        return []

    def _delete(self, st: Statement, params: list[Any]) -> list[dict[str, Any]]:
        table = self._table(st.table)
        where = {c: v for c, _, v in self._bound(st.where, params)}
        pk, ck = self._key(table, where)
        partition = self.data.get(st.table, {}).get(pk, {})
        row = partition.get(ck)
        if st.if_exists or st.conditions:
            conditions = self._bound(st.conditions, params)
            if row is None or not self._holds(row, conditions):
                return self._refused(row, conditions)
            partition.pop(ck, None)
            return [{"[applied]": True}]
        partition.pop(ck, None)
        return []


class FakeCluster:
    def shutdown(self) -> None:
        pass
