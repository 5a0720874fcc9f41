"""A small parser for exactly the CQL the Cassandra ledger uses, so tests can check it (and
run it against an in-memory fake) without a server. Anything else it does not understand
raises, so a new statement shape cannot slip past the checks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Table:
    name: str
    columns: dict[str, str]
    partition_key: list[str]
    clustering: list[str]


@dataclass
class Condition:
    column: str
    op: str
    value: str  # "?" or a literal


@dataclass
class Statement:
    verb: str
    table: str
    columns: list[str] = field(default_factory=list)  # read (SELECT) or written
    values: list[str] = field(default_factory=list)  # INSERT values / UPDATE assignments
    where: list[Condition] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)  # the IF part
    if_exists: bool = False
    if_not_exists: bool = False
    ttl: bool = False
    text: str = ""


def parse_table(text: str) -> Table:
    m = re.fullmatch(r"CREATE TABLE IF NOT EXISTS \S+?\.(\w+) \((.*)\)(?: WITH .*)?", text, re.DOTALL)
    assert m, text
    body = m.group(2)
    pk = re.search(r"PRIMARY KEY \(\((.*?)\)(.*?)\)$", body.strip())
    assert pk, body
    columns = {}
    for part in body[: pk.start()].split(","):
        if part.strip():
            name, kind = part.split()
            columns[name] = kind
    clustering = [c.strip() for c in pk.group(2).split(",") if c.strip()]
    return Table(m.group(1), columns, [c.strip() for c in pk.group(1).split(",")], clustering)


def _conditions(text: str) -> list[Condition]:
    out = []
    for part in text.split(" AND "):
        m = re.fullmatch(r"\s*(\w+) (=|<=|>=|<|>) (\?|'[^']*'|\d+)\s*", part)
        assert m, f"cannot read condition {part!r}"
        out.append(Condition(*m.groups()))
    return out


def parse_statement(text: str) -> Statement:
    if m := re.fullmatch(r"SELECT (.+?) FROM \S+?\.(\w+) WHERE (.+)", text):
        return Statement("SELECT", m.group(2), [c.strip() for c in m.group(1).split(",")],
                         where=_conditions(m.group(3)), text=text)
    if m := re.fullmatch(r"INSERT INTO \S+?\.(\w+) \((.+?)\) VALUES \((.+?)\)( IF NOT EXISTS)?( USING TTL \?)?", text):
        return Statement("INSERT", m.group(1), [c.strip() for c in m.group(2).split(",")],
                         [v.strip() for v in m.group(3).split(",")], if_not_exists=bool(m.group(4)),
                         ttl=bool(m.group(5)), text=text)
    if m := re.fullmatch(r"UPDATE \S+?\.(\w+)( USING TTL \?)? SET (.+?) WHERE (.+?)(?: IF (.+))?", text):
        sets = [s.split(" = ") for s in m.group(3).split(", ")]
        return Statement("UPDATE", m.group(1), [c.strip() for c, _ in sets], [v.strip() for _, v in sets],
                         _conditions(m.group(4)), _conditions(m.group(5)) if m.group(5) else [],
                         ttl=bool(m.group(2)), text=text)
    if m := re.fullmatch(r"DELETE FROM \S+?\.(\w+) WHERE (.+?)(?: IF (EXISTS|.+))?", text):
        cond = m.group(3)
        return Statement("DELETE", m.group(1), where=_conditions(m.group(2)),
                         conditions=_conditions(cond) if cond and cond != "EXISTS" else [],
                         if_exists=cond == "EXISTS", text=text)
    raise AssertionError(f"statement not understood: {text}")
