"""Every CQL statement of the Cassandra ledger, in one place, with the reasoning beside it.

Partitions and why
------------------
A ledger sees every task twice (recorded, then deleted when done), so almost all it holds
ends as a tombstone. One partition per task list would pile every tombstone of that list
into one hot partition that each ``outstanding`` scan reads through, until reads time out
(``tombstone_failure_threshold``). So records live in **time buckets**: partition key
``(task_list, bucket)``, where ``bucket = floor(created_at / bucket_seconds)`` (default one
hour). A partition holds at most the tasks of one list created in one hour, and a record
never moves between buckets (heartbeats update it in place, which costs no tombstone).

* ``outstanding(older_than)`` reads only buckets that started before ``now - older_than``
  (a newer record cannot be that idle), so the hot current bucket, where most deletes land,
  is skipped; a bucket found empty once no task can land in it any more is dropped from the
  bucket list, so old empty buckets are not read again.
* ``task_index`` maps ``(task_list, id)`` to the bucket: ``touch``/``done``/``find`` know only
  the id. Its partitions hold one row each; ``INSERT ... IF NOT EXISTS`` there is what makes
  ``created`` return True exactly once, and fixes a task's bucket even when two writers race.
* ``task_buckets`` lists the buckets per list and kind in one small partition (``scope``):
  lists x kinds x (ttl / bucket) rows, about 34,000 for 100 lists, 7 days, 1-hour buckets.
  Each process writes a bucket's row once, so it is not a write hot spot.
* The schedule is bucketed the same way by due time (``at``), clustered by ``at`` so
  ``due`` reads a slice and each taken row is removed with ``DELETE ... IF EXISTS`` (a
  lightweight transaction): two releasers never both send one task.
* Every write carries a TTL (default 7 days, beyond ``at`` for scheduled rows): a record
  whose ``done`` was lost expires instead of living forever. The one exception is the
  schema version row, which must outlive them all. The TTL must exceed the longest
  task; a row whose ``task`` cell expired is treated as gone.
* ``gc_grace_seconds`` is lowered to 6 hours on the record tables so tombstones are purged
  sooner. The price: a node down longer than that may bring a deleted record back, which
  at worst resends a finished task once (at-least-once allows it); run repairs within it.
* ``claim`` is an ``UPDATE ... IF claim_until <= now AND attempts = seen AND updated_at <=
  now - older_than``: the attempts condition makes two replicas that read the same record
  race in Paxos, and exactly one wins; the age condition loses to a heartbeat that landed
  since ``outstanding`` listed the record.

Lightweight transactions are never retried blindly
--------------------------------------------------
A conditional write that timed out may have been applied. Run again, it answers "not
applied" with our own row, and a ``created`` taken for a duplicate is never sent: the task is
lost. So ``CONDITIONAL`` statements are prepared non-idempotent and the session's retry
policy rethrows their timeouts; and since a caller may still run one again, each one says
what it wrote: ``index_add`` writes a fresh ``writer`` token, which a refused insert returns
with the row it found, and a refused claim whose row holds our values is checked against
the owner with a ``SERIAL_READS`` read, which sees the outcome of any round in progress.

Schema versions
---------------
``ledger_schema`` holds the keyspace's version in one row that never expires. ``taskbus
ledger init`` creates what is missing and runs the ``MIGRATIONS`` newer than that row, then
writes it; opening a ledger reads it and refuses an older keyspace (run ``ledger init``) or a
newer one (upgrade taskbus), instead of failing later on a column one side does not know.
The scheduled task's ``kind`` is not a clustering column, so ``due`` filters it in the
client: one list's due rows are read either way, and the kinds share a bucket.

Statements name their keyspace as ``{ks}``; ``render`` fills it in. Times are Unix seconds
(``double``), as the other backends keep them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from task.errors import ConfigError

__all__ = [
    "ALREADY_THERE", "CONDITIONAL", "KEYSPACE", "MIGRATIONS", "SERIAL_READS", "STATEMENTS", "TABLES",
    "VERSION", "VERSION_SCOPE", "WRITES", "Migration", "render", "replication_map", "steps_after",
]

#: CREATE KEYSPACE; ``{replication}`` is a CQL map from ``replication_map``
KEYSPACE = "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"

#: Leveled compaction: rows are updated and deleted within minutes, and recover reads them;
#: LCS keeps a row's versions and tombstones in few SSTables so they merge and purge early.
_RECORD_OPTIONS = (
    " WITH gc_grace_seconds = 21600"
    " AND compaction = {'class': 'LeveledCompactionStrategy'}"
)

TABLES: dict[str, str] = {
    "task_records": (
        "CREATE TABLE IF NOT EXISTS {ks}.task_records ("
        " task_list text, bucket bigint, id text, state text, task text, attempts int,"
        " created_at double, updated_at double, owner text, claim_until double,"
        " PRIMARY KEY ((task_list, bucket), id))" + _RECORD_OPTIONS
    ),
    "task_index": (
        "CREATE TABLE IF NOT EXISTS {ks}.task_index ("
        " task_list text, id text, bucket bigint, writer text,"
        " PRIMARY KEY ((task_list, id))) WITH gc_grace_seconds = 21600"
    ),
    "task_buckets": (
        "CREATE TABLE IF NOT EXISTS {ks}.task_buckets ("
        " scope text, task_list text, kind text, bucket bigint,"
        " PRIMARY KEY ((scope), task_list, kind, bucket))"
    ),
    "task_schedule": (
        "CREATE TABLE IF NOT EXISTS {ks}.task_schedule ("
        " task_list text, bucket bigint, at double, id text, task text, topic text, kind text,"
        " PRIMARY KEY ((task_list, bucket), at, id))" + _RECORD_OPTIONS
    ),
    "schedule_index": (
        "CREATE TABLE IF NOT EXISTS {ks}.schedule_index ("
        " task_list text, id text, at double,"
        " PRIMARY KEY ((task_list, id))) WITH gc_grace_seconds = 21600"
    ),
    "ledger_schema": (
        "CREATE TABLE IF NOT EXISTS {ks}.ledger_schema ("
        " scope text, version int,"
        " PRIMARY KEY ((scope)))"
    ),
}

_RECORD_COLUMNS = "state, task, attempts, created_at, updated_at, owner, claim_until"

STATEMENTS: dict[str, str] = {
    "index_get": "SELECT bucket FROM {ks}.task_index WHERE task_list = ? AND id = ?",
    "index_add": (
        "INSERT INTO {ks}.task_index (task_list, id, bucket, writer) VALUES (?, ?, ?, ?)"
        " IF NOT EXISTS USING TTL ?"
    ),
    "index_delete": "DELETE FROM {ks}.task_index WHERE task_list = ? AND id = ?",
    "record_put": (
        "INSERT INTO {ks}.task_records (task_list, bucket, id, state, task, attempts,"
        " created_at, updated_at, owner, claim_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', 0)"
        " USING TTL ?"
    ),
    "record_started": (
        "UPDATE {ks}.task_records USING TTL ? SET state = 'started', updated_at = ?"
        " WHERE task_list = ? AND bucket = ? AND id = ?"
    ),
    "record_touch": (
        "UPDATE {ks}.task_records USING TTL ? SET updated_at = ?"
        " WHERE task_list = ? AND bucket = ? AND id = ?"
    ),
    "record_claim": (
        "UPDATE {ks}.task_records USING TTL ? SET owner = ?, claim_until = ?, attempts = ?,"
        " updated_at = ? WHERE task_list = ? AND bucket = ? AND id = ?"
        " IF claim_until <= ? AND attempts = ? AND updated_at <= ?"
    ),
    "record_claimed": (
        "SELECT owner, claim_until, attempts FROM {ks}.task_records"
        " WHERE task_list = ? AND bucket = ? AND id = ?"
    ),
    "record_delete": "DELETE FROM {ks}.task_records WHERE task_list = ? AND bucket = ? AND id = ?",
    "record_get": (
        "SELECT " + _RECORD_COLUMNS + " FROM {ks}.task_records"
        " WHERE task_list = ? AND bucket = ? AND id = ?"
    ),
    "records_in_bucket": (
        "SELECT id, " + _RECORD_COLUMNS + " FROM {ks}.task_records"
        " WHERE task_list = ? AND bucket = ?"
    ),
    "bucket_add": (
        "INSERT INTO {ks}.task_buckets (scope, task_list, kind, bucket) VALUES (?, ?, ?, ?)"
        " USING TTL ?"
    ),
    "buckets_until": (
        "SELECT bucket FROM {ks}.task_buckets"
        " WHERE scope = ? AND task_list = ? AND kind = ? AND bucket <= ?"
    ),
    "bucket_delete": (
        "DELETE FROM {ks}.task_buckets WHERE scope = ? AND task_list = ? AND kind = ? AND bucket = ?"
    ),
    "lists": "SELECT task_list FROM {ks}.task_buckets WHERE scope = ?",
    "schedule_put": (
        "INSERT INTO {ks}.task_schedule (task_list, bucket, at, id, task, topic, kind)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
    ),
    # kind is no clustering column: ``due`` filters it in the client, never ALLOW FILTERING
    "schedule_due": (
        "SELECT at, id, task, topic, kind FROM {ks}.task_schedule"
        " WHERE task_list = ? AND bucket = ? AND at <= ?"
    ),
    "schedule_get": (
        "SELECT task, topic, kind FROM {ks}.task_schedule"
        " WHERE task_list = ? AND bucket = ? AND at = ? AND id = ?"
    ),
    "schedule_count": "SELECT count(*) FROM {ks}.task_schedule WHERE task_list = ? AND bucket = ?",
    "schedule_take": (
        "DELETE FROM {ks}.task_schedule WHERE task_list = ? AND bucket = ? AND at = ? AND id = ?"
        " IF EXISTS"
    ),
    "schedule_drop": (
        "DELETE FROM {ks}.task_schedule WHERE task_list = ? AND bucket = ? AND at = ? AND id = ?"
    ),
    "schedule_index_get": "SELECT at FROM {ks}.schedule_index WHERE task_list = ? AND id = ?",
    "schedule_index_put": (
        "INSERT INTO {ks}.schedule_index (task_list, id, at) VALUES (?, ?, ?) USING TTL ?"
    ),
    "schedule_index_take": "DELETE FROM {ks}.schedule_index WHERE task_list = ? AND id = ? IF at = ?",
    "version_get": "SELECT version FROM {ks}.ledger_schema WHERE scope = ?",
    # the one write without a TTL: an expired version would make a current keyspace look old
    "version_put": "INSERT INTO {ks}.ledger_schema (scope, version) VALUES (?, ?)",
}

#: statements that write (consistency ``write_consistency``); the rest read
WRITES = frozenset(name for name, cql in STATEMENTS.items() if not cql.startswith("SELECT"))
#: lightweight transactions (``IF ...``): prepared non-idempotent, never retried by the driver
CONDITIONAL = frozenset(name for name, cql in STATEMENTS.items() if re.search(r"\sIF\s", cql))
#: reads at the serial consistency: they see the outcome of a transaction still in progress
SERIAL_READS = frozenset({"record_claimed"})

@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the keyspace's schema: ``ddl`` takes a keyspace at ``version - 1`` to
    ``version``. Cassandra's schema changes are not transactional and two ``ledger init``
    may race, so each statement must be safe to find already applied (see ``ALREADY_THERE``).
    """

    version: int
    #: what the step changes, for the log line of an upgrade
    what: str
    ddl: tuple[str, ...]


#: Every step, oldest first (1: the first tables, as ``TABLES`` creates them); the last
#: one's version is the schema this code reads and writes. ``TABLES`` creates a new keyspace
#: at that version already; ``CREATE TABLE IF NOT EXISTS`` leaves an older table as it was,
#: so the later steps bring it up.
#: Steps only add nullable columns: no backfill, a null reads as its old meaning (``topic``:
#: the task's type; ``kind``: retry), so processes of the previous version keep working
#: against an upgraded keyspace and replicas can be upgraded one at a time.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the ledger's first tables (records, index, buckets, schedule)", ()),
    Migration(2, "task_index.writer: a conditional insert run twice tells its own row",
              ("ALTER TABLE {ks}.task_index ADD writer text",)),
    Migration(3, "each scheduled task keeps its destination topic and its kind",
              ("ALTER TABLE {ks}.task_schedule ADD topic text",
               "ALTER TABLE {ks}.task_schedule ADD kind text")),
)
VERSION = MIGRATIONS[-1].version
#: the ``ledger_schema`` row holding the keyspace's version
VERSION_SCOPE = "ledger"
#: how Cassandra refuses to add a column a table has: 3.x, then 4.0 and later
ALREADY_THERE = ("conflicts with an existing column", "already exists")


def steps_after(version: int) -> list[Migration]:
    """The migrations a keyspace at ``version`` needs, oldest first."""
    return [step for step in MIGRATIONS if step.version > version]


_KEYSPACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_DC_FACTOR = re.compile(r"([A-Za-z0-9_.-]+)[:=](\d+)")


def render(cql: str, keyspace: str) -> str:
    """``cql`` with its keyspace filled in.

    Raises:
        ConfigError: ``keyspace`` is not a valid Cassandra name.
    """
    if not _KEYSPACE_NAME.fullmatch(keyspace):
        raise ConfigError(
            f"{keyspace!r} is not a Cassandra keyspace name: a letter, then up to 47 letters, "
            "digits or _ (cassandra://host:9042/taskbus)"
        )
    return cql.replace("{ks}", keyspace)


def replication_map(spec: str) -> str:
    """The CQL replication map of ``spec``: ``""`` or ``3`` (SimpleStrategy with that factor,
    1 when empty; for a single data center) or ``dc1:3,dc2:3`` (NetworkTopologyStrategy, what
    production uses).

    Raises:
        ConfigError: ``spec`` is neither.
    """
    spec = spec.strip()
    if not spec or spec.isdigit():
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {int(spec or 1)}}}"
    pairs = [_DC_FACTOR.fullmatch(part.strip()) for part in spec.split(",")]
    if not all(pairs):
        raise ConfigError(
            f"replication {spec!r}: give a replication factor (3) or data centers with "
            "factors (dc1:3,dc2:3)"
        )
    dcs = ", ".join(f"'{m.group(1)}': {m.group(2)}" for m in pairs if m)
    return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"
