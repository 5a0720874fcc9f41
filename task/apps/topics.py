"""``taskbus topics``: how many tasks wait, are in flight, were redelivered, per topic and
channel, read from the bus itself (and the ledger's schedule with ``--ledger``).

What each bus can tell is in ``task.inspect``; a count the bus does not know prints ``-``
and the notes under the table say why. ``--json`` prints one object per row instead.
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar

from pydantic import Field

from task.apps.inspecting import age_text, cli_inspector, count_text, table
from task.errors import ConfigError
from task.inspect.base import CannotInspect, Inspector, TopicStats
from task.inspect.schedule import scheduled_per_topic
from task.ledger.base import Ledger
from task.ledger.registry import open_ledger
from task.settings import AppSettings, BusSettings, positional

__all__ = ["TopicsApp", "TopicsSettings", "add_schedule", "render"]

logger = logging.getLogger(__name__)

_HEADER = ("TOPIC", "CHANNEL", "WAITING", "IN FLIGHT", "REDELIVERED", "DELAYED", "RETRYING", "OLDEST")


class TopicsSettings(BusSettings):
    """``taskbus topics``: the backlog of every topic and channel on the bus."""

    prefix: str = positional("", description="only topics whose name starts with this")
    json_output: bool = Field(False, description="print JSON instead of a table",
                              json_schema_extra={"short": "--json"})


async def add_schedule(rows: list[TopicStats], ledger: Ledger, prefix: str = "") -> list[TopicStats]:
    """``rows`` with the ledger's delayed and retrying tasks added to their topic's rows (every
    channel of a topic gets them when they are sent); a topic only the ledger knows gets a row.

    Raises:
        LedgerError: the ledger cannot be read.
    """
    counts = await scheduled_per_topic(ledger)
    seen = {row.topic for row in rows}
    for topic in sorted(counts):
        if topic not in seen and (not prefix or topic.startswith(prefix)):
            rows.append(TopicStats(topic, "", notes=["only in the ledger's schedule: nothing on the bus yet"]))
    for row in rows:
        found = counts.get(row.topic)
        row.delayed = (row.delayed or 0) + (found.delayed if found else 0)
        row.retrying = found.retrying if found else 0
    return rows


def render(rows: list[TopicStats]) -> str:
    """The table and, under it, each note once with the rows it is about."""
    if not rows:
        return "no topics"
    lines = [table(_HEADER, [
        (r.topic, r.channel or "-", count_text(r.waiting), count_text(r.in_flight),
         count_text(r.redelivered), count_text(r.delayed), count_text(r.retrying),
         age_text(r.oldest_age_seconds))
        for r in rows
    ])]
    notes: dict[str, list[str]] = {}
    for r in rows:
        for note in r.notes:
            notes.setdefault(note, []).append(f"{r.topic}/{r.channel}" if r.channel else r.topic)
    if notes:
        lines.append("")
        lines.extend(f"note ({', '.join(dict.fromkeys(where))}): {note}" for note, where in notes.items())
    return "\n".join(lines)


class TopicsApp:
    """Prints the backlog once and returns; the app closes the inspector and ledger it is given."""

    Settings: ClassVar[type[AppSettings]] = TopicsSettings

    def __init__(self, *, inspector: Inspector, ledger: Ledger | None = None, prefix: str = "",
                 as_json: bool = False) -> None:
        self.inspector = inspector
        self.ledger = ledger
        self.prefix = prefix
        self.as_json = as_json

    @classmethod
    def from_settings(cls, settings: AppSettings) -> TopicsApp:
        """Build the app; no I/O.

        Raises:
            ConfigError: the memory bus (in-process only), a bad bus or ledger URL.
        """
        assert isinstance(settings, TopicsSettings)
        inspector = cli_inspector("topics", settings.bus, settings.credentials())
        ledger = open_ledger(settings.ledger, create=False) if settings.ledger else None
        return cls(inspector=inspector, ledger=ledger, prefix=settings.prefix, as_json=settings.json_output)

    async def run(self) -> int:
        """Print the table (or JSON); 0.

        Raises:
            ConfigError: the bus keeps nothing to list (core NATS).
            BusError: the bus cannot be reached.
            LedgerError: the ledger cannot be read.
        """
        try:
            try:
                rows = await self.inspector.topics(self.prefix or None)
            except CannotInspect as err:
                raise ConfigError(f"taskbus topics: {err.reason}") from err
            if self.ledger is not None:
                rows = await add_schedule(rows, self.ledger, self.prefix)
            print(json.dumps([r.to_json() for r in rows], ensure_ascii=False, indent=1)
                  if self.as_json else render(rows))
            return 0
        finally:
            await self.inspector.close()
            if self.ledger is not None:
                await self.ledger.close()

    async def stop(self) -> None:
        """Nothing runs for long; closing happens when ``run`` returns."""
