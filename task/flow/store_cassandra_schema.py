"""Every CQL statement of the Cassandra task store, with the reasoning beside it.

Partitions and why
------------------
The console reads per UTC day; retention drops whole days. So the events live in **day
partitions**: ``flow_events`` is keyed ``((day, shard), at, seq)``, where ``day`` is the day
of the task's first event (a late event joins its task's day) and ``shard`` a hash of the id
into ``SHARDS`` partitions, so 100,000 events a day make partitions of ~12,500 rows, not one
of 100,000. A day is read whole (``SHARDS`` partition reads) and folded into task rows in the
client (``store_fold``) and kept folded (``store_day_view``): after that, only the rows
written since are read (``events_since``, a slice of the clustering order), so a console page
costs ``SHARDS`` small reads. Dropping a day deletes its partitions: one tombstone each, none per row.

* ``flow_chain`` ``((id), at, seq)``: the same events by id, for ``chain`` (one partition).
* ``flow_task_day`` ``((id), type, job)``: the day a task is on, read before recording its
  next events. Two replicas recording a task's very first events at once around midnight may
  each pick their own day; the later write wins and the other day keeps a stray row.
* ``flow_days`` ``((scope), day)``: the days that have tasks, one small partition.
* ``flow_alerts`` and ``flow_files`` ``((day), at, seq)``.
* ``flow_store_schema``: the tables' version, apart from the ledger's ``ledger_schema``.

``seq`` is a text that sorts in record order within a process (nanoseconds, then a random
tail), so events of equal ``at`` keep the order they were recorded in. No TTL: the daily
clean-up (``task.flow.retention``) removes what is older than the retention setting.
Statements name their keyspace as ``{ks}`` (``task.ledger.cassandra_schema.render``).
"""

from __future__ import annotations

__all__ = ["EVENT_COLUMNS", "SCOPE", "SHARDS", "STATEMENTS", "TABLES", "VERSION", "WRITES"]

#: partitions per day of ``flow_events``
SHARDS = 8
#: the one partition of ``flow_days`` and ``flow_store_schema``
SCOPE = "flow"
VERSION = 1

_EVENT = ("id text, type text, job text, event text, at double, seq text, result text,"
          " msg text, info text, meta text, workflow text, created text, started text,"
          " ended text, parent text, attempt int")
EVENT_COLUMNS = ("id, type, job, event, at, seq, result, msg, info, meta, workflow, created,"
                 " started, ended, parent, attempt")
_MARKS = ", ".join("?" * 16)

TABLES: dict[str, str] = {
    "flow_events": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_events (day text, shard int, " + _EVENT + ","
        " PRIMARY KEY ((day, shard), at, seq))"
    ),
    "flow_chain": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_chain (day text, " + _EVENT + ","
        " PRIMARY KEY ((id), at, seq))"
    ),
    "flow_task_day": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_task_day (id text, type text, job text, day text,"
        " PRIMARY KEY ((id), type, job))"
    ),
    "flow_days": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_days (scope text, day text,"
        " PRIMARY KEY ((scope), day))"
    ),
    "flow_alerts": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_alerts (day text, at double, seq text, id text,"
        " type text, job text, kind text, msg text, PRIMARY KEY ((day), at, seq))"
    ),
    "flow_files": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_files (day text, at double, seq text, path text,"
        " size bigint, phases text, task_ids text, PRIMARY KEY ((day), at, seq))"
    ),
    "flow_store_schema": (
        "CREATE TABLE IF NOT EXISTS {ks}.flow_store_schema (scope text, version int,"
        " PRIMARY KEY ((scope)))"
    ),
}

STATEMENTS: dict[str, str] = {
    "event_put": (
        "INSERT INTO {ks}.flow_events (day, shard, " + EVENT_COLUMNS + ") VALUES (?, ?, "
        + _MARKS + ")"
    ),
    "events_of_day": (
        "SELECT " + EVENT_COLUMNS + " FROM {ks}.flow_events WHERE day = ? AND shard = ?"
    ),
    "events_since": (
        "SELECT " + EVENT_COLUMNS + " FROM {ks}.flow_events WHERE day = ? AND shard = ?"
        " AND at >= ?"
    ),
    "events_count": "SELECT count(*) FROM {ks}.flow_events WHERE day = ? AND shard = ?",
    "events_drop": "DELETE FROM {ks}.flow_events WHERE day = ? AND shard = ?",
    "chain_put": (
        "INSERT INTO {ks}.flow_chain (day, " + EVENT_COLUMNS + ") VALUES (?, " + _MARKS + ")"
    ),
    "chain_get": "SELECT " + EVENT_COLUMNS + " FROM {ks}.flow_chain WHERE id = ?",
    "chain_drop": "DELETE FROM {ks}.flow_chain WHERE id = ? AND at = ? AND seq = ?",
    "task_day_get": "SELECT type, job, day FROM {ks}.flow_task_day WHERE id = ?",
    "task_day_put": (
        "INSERT INTO {ks}.flow_task_day (id, type, job, day) VALUES (?, ?, ?, ?)"
    ),
    "task_day_drop": "DELETE FROM {ks}.flow_task_day WHERE id = ? AND type = ? AND job = ?",
    "day_put": "INSERT INTO {ks}.flow_days (scope, day) VALUES (?, ?)",
    "days": "SELECT day FROM {ks}.flow_days WHERE scope = ?",
    "day_drop": "DELETE FROM {ks}.flow_days WHERE scope = ? AND day = ?",
    "alert_put": (
        "INSERT INTO {ks}.flow_alerts (day, at, seq, id, type, job, kind, msg)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "alerts": "SELECT at, id, type, job, kind, msg FROM {ks}.flow_alerts WHERE day = ?",
    "alerts_drop": "DELETE FROM {ks}.flow_alerts WHERE day = ?",
    "file_put": (
        "INSERT INTO {ks}.flow_files (day, at, seq, path, size, phases, task_ids)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    ),
    "files": "SELECT at, path, size, phases, task_ids FROM {ks}.flow_files WHERE day = ?",
    "files_drop": "DELETE FROM {ks}.flow_files WHERE day = ?",
    "version_get": "SELECT version FROM {ks}.flow_store_schema WHERE scope = ?",
    "version_put": "INSERT INTO {ks}.flow_store_schema (scope, version) VALUES (?, ?)",
}

#: statements that write (consistency ``write_consistency``); the rest read
WRITES = frozenset(name for name, cql in STATEMENTS.items() if not cql.startswith("SELECT"))
