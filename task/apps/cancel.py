"""``taskbus cancel ID...``: remove delayed tasks from the ledger before they are released.

A task delayed with ``taskbus send --delay/--at`` (or the client) on a bus without native
delay waits in the ledger's schedule; cancelling takes it out, so it never runs. One line per
id says what happened: cancelled, released already (too late: it is on its topic), or
unknown. Exit 0 when every id was cancelled, 1 otherwise, 2 for a usage mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from task.delayed import CancelOutcome, cancel_delayed
from task.errors import ConfigError, LedgerError
from task.ledger.base import Ledger
from task.ledger.registry import open_ledger
from task.ledger.sqlite import SqliteLedger
from task.settings import AppSettings, positional

__all__ = ["CancelApp", "CancelSettings"]

logger = logging.getLogger(__name__)


class CancelSettings(AppSettings):
    """``taskbus cancel``: cancel delayed tasks not yet released."""

    ids: list[str] = positional([], description="ids of the delayed tasks to cancel")
    ledger: str = Field("", description="ledger URL holding the delayed tasks (sqlite:PATH, cassandra://h:p/keyspace)")
    type: str = Field("", description="task list (the task's type) to look in; default: every list")


class CancelApp:
    """Cancels each id in turn and prints one line for it. Closes the ledger it is given."""

    Settings: ClassVar[type[AppSettings]] = CancelSettings

    def __init__(self, *, ledger: Ledger, ids: Sequence[str], task_list: str = "") -> None:
        if not ids:
            raise ConfigError("usage: taskbus cancel ID... --ledger URL (the ids taskbus send printed)")
        self.ledger = ledger
        self.ids = list(ids)
        self.task_list = task_list
        #: what each cancel found, in order (for tests and embedding)
        self.outcomes: list[CancelOutcome] = []

    @classmethod
    def from_settings(cls, settings: AppSettings) -> CancelApp:
        """Build the app; no I/O.

        Raises:
            ConfigError: no ids, no ledger URL, or a bad one.
        """
        assert isinstance(settings, CancelSettings)
        if not settings.ids:
            raise ConfigError("usage: taskbus cancel ID... --ledger URL (the ids taskbus send printed)")
        if not settings.ledger:
            raise ConfigError("taskbus cancel needs --ledger URL, the ledger the delayed tasks wait "
                              "in (e.g. sqlite:./taskbus-data/ledger.db)")
        ledger = open_ledger(settings.ledger)
        if isinstance(ledger, SqliteLedger) and not Path(ledger.path).is_file():
            # cancelling writes, so the file is opened for writing: a mistyped path must not
            # leave an empty ledger behind and answer "unknown"
            raise ConfigError(f"no ledger at {ledger.path}; check the path (the --ledger the "
                              "delayed tasks were sent with)")
        return cls(ledger=ledger, ids=settings.ids, task_list=settings.type)

    async def run(self) -> int:
        """Cancel every id; 0 when all were cancelled, 1 when any was not or the ledger failed.

        Raises:
            ConfigError: the ledger does not exist or cannot cancel.
        """
        try:
            for id in self.ids:
                result = await cancel_delayed(self.ledger, id, task_list=self.task_list or None)
                self.outcomes.append(result.outcome)
                out = sys.stdout if result.outcome is CancelOutcome.CANCELLED else sys.stderr
                print(result.message, file=out)
        except LedgerError as err:
            print(f"taskbus cancel: {err}", file=sys.stderr)
            return 1
        finally:
            await self.ledger.close()
        return 0 if all(o is CancelOutcome.CANCELLED for o in self.outcomes) else 1

    async def stop(self) -> None:
        """Cancelling is short; nothing to interrupt."""
