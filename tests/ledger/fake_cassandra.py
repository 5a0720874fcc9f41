"""An in-memory stand-in for a cassandra-driver Session that runs the ledger's own CQL.

It understands exactly the statements ``tests/ledger/cql.py`` parses, with Cassandra's
semantics where the ledger depends on them: upserts, rows sorted by clustering key,
``IF NOT EXISTS`` returning the existing row, conditional updates, ``IF EXISTS`` deletes,
``count(*)``. TTLs are accepted and ignored. It lets the contract suite exercise the
Cassandra ledger's bucket and transaction logic where no server can run; the real server
run (``TASK_TEST_CASSANDRA``) remains the proof.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from task.ledger import cassandra_schema as schema
from tests.ledger.cql import Condition, Statement, Table, parse_statement, parse_table

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
TABLES: dict[str, Table] = {t.name: t for t in map(parse_table, schema.TABLES.values())}


def _literal(token: str, params: list[Any]) -> Any:
    if token == "?":
        return params.pop(0)
    if token.startswith("'"):
        return token.strip("'")
    return int(token)


@dataclass
class FakeResult:
    current_rows: list[dict[str, Any]]
    was_applied: bool = True
    has_more_pages: bool = False
    paging_state: bytes | None = None

    def one(self) -> dict[str, Any] | None:
        return self.current_rows[0] if self.current_rows else None


class FakeFuture:
    def __init__(self, result: FakeResult) -> None:
        self._result = result

    def add_callbacks(self, ok: Callable[[Any], None], fail: Callable[[BaseException], None]) -> None:
        ok(self._result.current_rows)

    def result(self) -> FakeResult:
        return self._result


@dataclass
class FakePrepared:
    statement: Statement
    consistency_level: int = 0
    serial_consistency_level: int = 0
    is_idempotent: bool = False


@dataclass
class FakeSession:
    #: table -> partition key -> clustering key -> row
    data: dict[str, dict[tuple[Any, ...], dict[tuple[Any, ...], dict[str, Any]]]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)

    def prepare(self, text: str) -> FakePrepared:
        return FakePrepared(parse_statement(text))

    def execute_async(self, prepared: FakePrepared, params: Any = None, paging_state: Any = None) -> FakeFuture:
        statement = prepared.statement
        self.executed.append(statement.text)
        return FakeFuture(getattr(self, "_" + statement.verb.lower())(statement, list(params or ())))

    def _key(self, table: Table, where: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return tuple(where[c] for c in table.partition_key), tuple(where.get(c) for c in table.clustering)

    @staticmethod
    def _bound(conditions: list[Condition], params: list[Any]) -> list[tuple[str, str, Any]]:
        return [(c.column, c.op, _literal(c.value, params)) for c in conditions]

    @staticmethod
    def _holds(row: dict[str, Any] | None, conditions: list[tuple[str, str, Any]]) -> bool:
        return row is not None and all(
            row.get(col) is not None and _OPS[op](row[col], value) for col, op, value in conditions)

    def _select(self, st: Statement, params: list[Any]) -> FakeResult:
        table = TABLES[st.table]
        where = self._bound(st.where, params)
        pk = tuple(next(v for c, _, v in where if c == column) for column in table.partition_key)
        rows = [row for _, row in sorted(self.data.get(st.table, {}).get(pk, {}).items())
                if self._holds(row, [w for w in where if w[0] in table.clustering])]
        if st.columns == ["count(*)"]:
            return FakeResult([{"count": len(rows)}])
        return FakeResult([{c: row.get(c) for c in st.columns} for row in rows])

    def _insert(self, st: Statement, params: list[Any]) -> FakeResult:
        table = TABLES[st.table]
        values = {c: _literal(v, params) for c, v in zip(st.columns, st.values)}
        pk, ck = self._key(table, values)
        partition = self.data.setdefault(st.table, {}).setdefault(pk, {})
        if st.if_not_exists and ck in partition:
            return FakeResult([{"[applied]": False, **partition[ck]}], was_applied=False)
        partition.setdefault(ck, {}).update(values)
        return FakeResult([{"[applied]": True}] if st.if_not_exists else [])

    def _update(self, st: Statement, params: list[Any]) -> FakeResult:
        table = TABLES[st.table]
        if st.ttl:
            params.pop(0)  # USING TTL comes before SET
        sets = {c: _literal(v, params) for c, v in zip(st.columns, st.values)}
        where = {c: v for c, _, v in self._bound(st.where, params)}
        pk, ck = self._key(table, where)
        partition = self.data.setdefault(st.table, {}).setdefault(pk, {})
        if st.conditions:
            if not self._holds(partition.get(ck), self._bound(st.conditions, params)):
                return FakeResult([{"[applied]": False}], was_applied=False)
        partition.setdefault(ck, dict(where)).update(sets)
        return FakeResult([])

    def _delete(self, st: Statement, params: list[Any]) -> FakeResult:
        table = TABLES[st.table]
        where = {c: v for c, _, v in self._bound(st.where, params)}
        pk, ck = self._key(table, where)
        partition = self.data.get(st.table, {}).get(pk, {})
        row = partition.get(ck)
        if st.if_exists or st.conditions:
            if row is None or not self._holds(row, self._bound(st.conditions, params)):
                return FakeResult([{"[applied]": False}], was_applied=False)
        partition.pop(ck, None)
        return FakeResult([])


class FakeCluster:
    def shutdown(self) -> None:
        pass
