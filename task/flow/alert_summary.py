"""Alerts added up per type:job: what the webhook's summary and the console's alerts page
both show, so the person on call reads the same lines in Slack and in the browser."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from task.flow.store import AlertRecord, day_of

__all__ = ["SummaryLine", "summarize"]


@dataclass(slots=True)
class SummaryLine:
    """The alerts of one type:job: how many, of which kinds, first and last (Unix seconds)."""

    type: str
    job: str
    count: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first: float = float("inf")
    last: float = float("-inf")
    #: the UTC days the alerts fell on, oldest first
    days: list[date] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``type:job`` (``type`` alone without a job)."""
        return f"{self.type}:{self.job}" if self.job else self.type

    def add(self, alert: AlertRecord) -> None:
        """Count ``alert`` in."""
        self.count += 1
        self.kinds[str(alert.kind)] = self.kinds.get(str(alert.kind), 0) + 1
        self.first = min(self.first, alert.at)
        self.last = max(self.last, alert.at)
        day = day_of(alert.at)
        if day not in self.days:
            self.days.append(day)
            self.days.sort()

    def kinds_text(self) -> str:
        """``2 error, 1 incomplete``: the kinds by count, then name."""
        ordered = sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{n} {kind}" for kind, n in ordered)

    def span_text(self) -> str:
        """``04:00:05–05:12:00 UTC`` (with the date when the alerts span several days)."""
        begin, end = (datetime.fromtimestamp(t, UTC) for t in (self.first, self.last))
        fmt = "%H:%M:%S" if begin.date() == end.date() else "%Y-%m-%d %H:%M:%S"
        if self.first == self.last:
            return begin.strftime(fmt) + " UTC"
        return f"{begin.strftime(fmt)}–{end.strftime(fmt)} UTC"


def summarize(alerts: Iterable[AlertRecord]) -> list[SummaryLine]:
    """One line per type:job of ``alerts``, the most alerts first, then by name."""
    lines: dict[tuple[str, str], SummaryLine] = {}
    for alert in alerts:
        key = (alert.type, alert.job)
        line = lines.get(key)
        if line is None:
            line = lines[key] = SummaryLine(alert.type, alert.job)
        line.add(alert)
    return sorted(lines.values(), key=lambda line: (-line.count, line.name))
