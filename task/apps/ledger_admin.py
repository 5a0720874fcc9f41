"""``taskbus ledger init|ls|show|stats``: set up and inspect the outstanding-task ledger.

For operators: ``init`` creates the schema (keyspace and tables on Cassandra, with the
replication given; safe to run twice), ``ls`` lists outstanding tasks with their age,
``show ID`` prints one task's record, ``stats`` counts per task list with the oldest age.
``--json`` prints machine-readable output instead of a table.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import Field

from task.errors import ConfigError, LedgerError
from task.ledger.base import Ledger, LedgerRecord
from task.ledger.registry import open_ledger
from task.settings import AppSettings, positional

__all__ = ["LedgerAdmin", "LedgerAdminSettings", "SchemaOwner"]

logger = logging.getLogger(__name__)

ACTIONS = ("init", "ls", "show", "stats")


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
    older_than: float = Field(0, ge=0, description="ls: only tasks idle at least this many seconds")
    limit: int = Field(100, ge=1, description="ls: at most this many tasks per task list")


def age(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``, ``3d04h``: an age an operator reads at a glance."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


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
    ) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"unknown ledger action {action!r}; use one of: {', '.join(ACTIONS)}"
                              if action else f"say what to do: taskbus ledger {'|'.join(ACTIONS)}")
        if action == "show" and not args:
            raise ConfigError("taskbus ledger show needs a task id: taskbus ledger show ID")
        if action == "init" and args:
            raise ConfigError(f"taskbus ledger init takes no arguments, got {' '.join(args)!r}")
        self.ledger = ledger
        self.action = action
        self.args = list(args)
        self.as_json = as_json
        self.replication = replication
        self.older_than = older_than
        self.limit = limit
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: AppSettings) -> LedgerAdmin:
        """Build the app; no I/O.

        Raises:
            ConfigError: no ledger URL, a bad URL, an unknown action, a missing argument.
        """
        assert isinstance(settings, LedgerAdminSettings)
        if not settings.ledger:
            raise ConfigError("taskbus ledger needs --ledger URL (e.g. sqlite:./taskbus-data/ledger.db)")
        return cls(ledger=open_ledger(settings.ledger), action=settings.action, args=settings.args,
                   as_json=settings.json_output, replication=settings.replication,
                   older_than=settings.older_than, limit=settings.limit)

    async def run(self) -> int:
        """Do the action; 0 when done, 1 when the ledger failed or a task was not found."""
        try:
            return await getattr(self, "_" + self.action)()  # type: ignore[no-any-return]
        except LedgerError as err:
            print(f"taskbus ledger {self.action}: {err}", file=sys.stderr)
            return 1
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
        self._print({"ok": True, "message": message}, message)
        return 0

    async def _lists(self) -> list[str]:
        return self.args or await self.ledger.task_lists()

    async def _ls(self) -> int:
        records: list[LedgerRecord] = []
        for name in await self._lists():
            listed = 0
            async for record in self.ledger.outstanding(name, self.older_than):
                records.append(record)
                listed += 1
                if listed >= self.limit:
                    break
        now = self.clock()
        rows = [(r.task_list, r.task.id, r.state, r.attempts, age(now - r.created_at),
                 age(now - r.updated_at), r.owner or "-") for r in records]
        header = ("TASK_LIST", "ID", "STATE", "ATTEMPTS", "AGE", "IDLE", "OWNER")
        self._print([self._record(r) for r in records],
                    _table(header, rows) if rows else "no outstanding tasks")
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
        rows = [(s.task_list, s.created, s.started, s.scheduled, age(s.oldest_age)) for s in stats]
        header = ("TASK_LIST", "CREATED", "STARTED", "SCHEDULED", "OLDEST")
        self._print(data, _table(header, rows) if rows else "the ledger is empty")
        return 0
