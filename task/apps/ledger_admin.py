"""``taskbus ledger init|ls|show|stats``: set up and inspect the outstanding-task ledger.

For operators: ``init`` creates the schema (keyspace and tables on Cassandra, with the
replication given, and there the ``taskbus flow`` task store's tables too, since a Cassandra
store is never created on first use; safe to run twice), ``ls`` lists outstanding tasks with their age and
how long they have been idle, and scheduled tasks (retries waiting out their backoff) with
when they are due; ``show ID`` prints one task's record, ``stats`` counts per task list with
the oldest age. Every duration in the text output has a unit; ``--json`` prints
machine-readable output instead (durations there are numbers of seconds).

Only ``init`` creates anything: ``ls``, ``show`` and ``stats`` open the ledger read-only,
so a mistyped path is reported (exit 2) rather than answered with an empty new database.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import Field

from task.duration import Duration, format_duration
from task.errors import ConfigError, LedgerError
from task.ledger.base import Ledger, LedgerRecord, ScheduledTask, ScheduleReader
from task.ledger.registry import open_ledger
from task.settings import AppSettings, positional

if TYPE_CHECKING:
    from task.flow.store import TaskStore

__all__ = ["LedgerAdmin", "LedgerAdminSettings", "SchemaOwner"]

logger = logging.getLogger(__name__)

#: each action and the line ``taskbus ledger`` alone prints for it
ACTIONS: dict[str, str] = {
    "init": "create the ledger (SQLite file, Cassandra keyspace and tables, with flow's there); safe to run twice",
    "ls": "list outstanding tasks (age, idle) and scheduled ones (when due)",
    "show": "print the record of each task id given: taskbus ledger show ID...",
    "stats": "count created, started and scheduled tasks per task list, with the oldest age",
}


def usage() -> str:
    """What ``taskbus ledger`` alone prints: one line per action, like ``taskbus`` alone."""
    width = max(map(len, ACTIONS))
    rows = "\n".join(f"  {name:<{width}}  {line}" for name, line in ACTIONS.items())
    return (f"taskbus ledger: say what to do: taskbus ledger ACTION --ledger URL "
            f"(taskbus ledger -h for the options)\n\nactions:\n{rows}")


def check_action(action: str, args: Sequence[str]) -> None:
    """Raises: ConfigError: no action (the list of actions), an unknown one, a wrong argument."""
    if not action:
        raise ConfigError(usage())
    if action not in ACTIONS:
        raise ConfigError(f"unknown ledger action {action!r}; use one of: {', '.join(ACTIONS)}")
    if action == "show" and not args:
        raise ConfigError("taskbus ledger show needs a task id: taskbus ledger show ID")
    if action == "init" and args:
        raise ConfigError(f"taskbus ledger init takes no arguments, got {' '.join(args)!r}")


@runtime_checkable
class SchemaOwner(Protocol):
    """A ledger whose schema ``taskbus ledger init`` can create (every built-in one)."""

    async def init_schema(self, replication: str = "") -> str:
        """Create what is missing; safe to run twice. Returns what it did, for the operator."""


class LedgerAdminSettings(AppSettings):
    """``taskbus ledger``: set up and inspect the outstanding-task ledger."""

    action: str = positional("", description="init, ls, show or stats")
    args: list[str] = positional([], description="ls/stats: task lists (default: all); show: task ids")
    ledger: str = Field("", description="ledger URL (sqlite:PATH, memory:, cassandra://h:p/keyspace)")
    json_output: bool = Field(False, description="print JSON instead of a table",
                              json_schema_extra={"short": "--json"})
    replication: str = Field("", description="init on Cassandra: replication factor (3) or dc1:3,dc2:3")
    older_than: Duration = Field(
        0, ge=0, description="ls: only outstanding tasks idle at least this long, e.g. 90s or 5m "
                             "(scheduled tasks are not idle: left out when set)")
    limit: int = Field(100, ge=1, description="ls: at most this many tasks per task list")


def _since(seconds: float) -> str:
    """A past span for a table cell, to the second: ``0s``, ``45s``, ``3m12s``, ``2h5m``."""
    return format_duration(max(0, round(seconds)))


def _due(at: float, now: float) -> str:
    """``due in 30s``, ``due now``, or ``due 5s ago`` (a retry nobody has released yet)."""
    left = round(at - now)
    if left > 0:
        return f"due in {format_duration(left)}"
    return "due now" if left == 0 else f"due {format_duration(-left)} ago"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


class LedgerAdmin:
    """Runs one ledger action and prints its result. The app closes the ledger it is given."""

    Settings: ClassVar[type[AppSettings]] = LedgerAdminSettings

    def __init__(
        self,
        *,
        ledger: Ledger,
        action: str,
        args: Sequence[str] = (),
        as_json: bool = False,
        replication: str = "",
        older_than: float = 0,
        limit: int = 100,
        clock: Callable[[], float] = time.time,
        flow_store: TaskStore | None = None,
    ) -> None:
        check_action(action, args)
        self.ledger = ledger
        #: ``init`` also creates this store's tables (the flow store beside a Cassandra ledger)
        self.flow_store = flow_store
        self.action = action
        self.args = list(args)
        self.as_json = as_json
        self.replication = replication
        self.older_than = older_than
        self.limit = limit
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: AppSettings) -> LedgerAdmin:
        """Build the app; no I/O. Only ``init`` may create the ledger; the others read it.

        Raises:
            ConfigError: no action (lists them), no ledger URL, a bad URL, an unknown action,
                a missing argument.
        """
        assert isinstance(settings, LedgerAdminSettings)
        check_action(settings.action, settings.args)
        if not settings.ledger:
            raise ConfigError("taskbus ledger needs --ledger URL (e.g. sqlite:./taskbus-data/ledger.db)")
        ledger = open_ledger(settings.ledger, create=settings.action == "init")
        flow_store = None
        if settings.action == "init" and settings.ledger.partition(":")[0].lower() == "cassandra":
            from task.flow.store import open_store  # only here: other actions need no flow code

            flow_store = open_store(settings.ledger)
        return cls(ledger=ledger, action=settings.action, args=settings.args,
                   as_json=settings.json_output, replication=settings.replication,
                   older_than=settings.older_than, limit=settings.limit, flow_store=flow_store)

    async def run(self) -> int:
        """Do the action; 0 when done, 1 when the ledger failed or a task was not found.

        Raises:
            ConfigError: the ledger to read does not exist (``init`` creates it).
        """
        try:
            return await getattr(self, "_" + self.action)()  # type: ignore[no-any-return]
        except LedgerError as err:
            print(f"taskbus ledger {self.action}: {err}", file=sys.stderr)
            return 1
        finally:
            try:
                if self.flow_store is not None:
                    await self.flow_store.close()
            finally:
                await self.ledger.close()

    async def stop(self) -> None:
        """Nothing runs for long; closing happens when ``run`` returns."""

    def _print(self, data: object, text: str) -> None:
        print(json.dumps(data, ensure_ascii=False, indent=1) if self.as_json else text)

    def _record(self, record: LedgerRecord) -> dict[str, object]:
        now = self.clock()
        return {"task_list": record.task_list, "id": record.task.id, "state": str(record.state),
                "attempts": record.attempts, "age": round(now - record.created_at, 3),
                "idle": round(now - record.updated_at, 3), "owner": record.owner,
                "task": json.loads(record.task.to_json())}

    async def _init(self) -> int:
        if not isinstance(self.ledger, SchemaOwner):
            raise ConfigError(f"{type(self.ledger).__name__} has no schema to create")
        message = await self.ledger.init_schema(self.replication)
        if not isinstance(self.flow_store, SchemaOwner):
            self._print({"ok": True, "message": message}, message)
            return 0
        flow = await self.flow_store.init_schema(self.replication)
        self._print({"ok": True, "message": message, "flow_store": flow}, f"{message}\n{flow}")
        return 0

    async def _lists(self) -> list[str]:
        return self.args or await self.ledger.task_lists()

    def _scheduled(self, item: ScheduledTask) -> dict[str, object]:
        return {"task_list": item.task_list, "id": item.task.id, "state": "scheduled",
                "kind": str(item.kind), "topic": item.topic,
                "due_in": round(item.at - self.clock(), 3), "task": json.loads(item.task.to_json())}

    async def _ls(self) -> int:
        records: list[LedgerRecord] = []
        waiting: list[ScheduledTask] = []
        schedule = self.ledger if isinstance(self.ledger, ScheduleReader) else None
        if schedule is None:
            logger.warning("%s cannot list scheduled tasks: only outstanding ones are shown",
                           type(self.ledger).__name__)
        for name in await self._lists():
            listed = 0
            async for record in self.ledger.outstanding(name, self.older_than):
                records.append(record)
                listed += 1
                if listed >= self.limit:
                    break
            if schedule is not None and not self.older_than:  # scheduled tasks are never idle
                waiting += await schedule.scheduled(name, self.limit)
        now = self.clock()
        rows: list[tuple[object, ...]] = [
            (r.task_list, r.task.id, r.state, r.attempts, _since(now - r.created_at),
             f"idle {_since(now - r.updated_at)}", r.owner or "-", "-") for r in records]
        rows += [(s.task_list, s.task.id, "scheduled", "-", "-", _due(s.at, now), "-", f"{s.kind}:{s.topic}")
                 for s in waiting]
        rows.sort(key=lambda row: str(row[0]))  # stable: each list's outstanding, then its scheduled
        header = ("TASK_LIST", "ID", "STATE", "ATTEMPTS", "AGE", "WHEN", "OWNER", "SENDS")
        data = [self._record(r) for r in records] + [self._scheduled(s) for s in waiting]
        data.sort(key=lambda item: str(item["task_list"]))
        self._print(data, _table(header, rows) if rows else "no outstanding or scheduled tasks")
        return 0

    async def _show(self) -> int:
        names = await self.ledger.task_lists()
        found, missing = [], []
        for id in self.args:
            records = [r for name in names if (r := await self.ledger.find(name, id)) is not None]
            found += [self._record(r) for r in records]
            if not records:
                missing.append(id)
        text = "\n\n".join(
            "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False) if k == 'task' else v}"
                      for k, v in r.items()) for r in found)
        if found:
            self._print(found if len(self.args) > 1 else found[0], text)
        for id in missing:
            print(f"taskbus ledger show: no outstanding record for task id {id!r}", file=sys.stderr)
        return 1 if missing else 0

    async def _stats(self) -> int:
        stats = [await self.ledger.stats(name) for name in await self._lists()]
        data = [{"task_list": s.task_list, "created": s.created, "started": s.started,
                 "scheduled": s.scheduled, "oldest_age": round(s.oldest_age, 3)} for s in stats]
        rows = [(s.task_list, s.created, s.started, s.scheduled, _since(s.oldest_age)) for s in stats]
        header = ("TASK_LIST", "CREATED", "STARTED", "SCHEDULED", "OLDEST")
        self._print(data, _table(header, rows) if rows else "the ledger is empty")
        return 0
