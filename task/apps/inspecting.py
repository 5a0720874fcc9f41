"""What ``taskbus topics``, ``peek`` and ``dlq`` share: opening an inspector from the command
line, and the plain-text table and ages they print."""

from __future__ import annotations

from collections.abc import Sequence

from task.bus.registry import scheme_of
from task.credentials import Credentials
from task.duration import format_duration
from task.errors import ConfigError
from task.inspect.base import Inspector, open_inspector

__all__ = ["age_text", "cli_inspector", "count_text", "table"]


def cli_inspector(command: str, url: str, credentials: Credentials) -> Inspector:
    """The inspector of ``url`` for a command run as its own process.

    Raises:
        ConfigError: the memory bus (it lives inside one process: this one would see its own,
            empty broker), or what ``open_inspector`` raises.
    """
    if scheme_of(url) == "memory":
        raise ConfigError(
            f"taskbus {command}: the memory bus lives inside the process that uses it; a "
            "separate taskbus command would see its own empty broker. A worker on the memory "
            "bus shows its backlog at /stats (--status-port); use file:, jetstream:// or "
            "kafka:// to inspect a bus from outside"
        )
    return open_inspector(url, credentials)


def count_text(value: int | None) -> str:
    """A count for a table cell; ``-`` where the bus does not know it."""
    return "-" if value is None else str(value)


def age_text(seconds: float | None) -> str:
    """An age for a table cell, to the second, with a unit; ``-`` where unknown."""
    return "-" if seconds is None else format_duration(max(0, round(seconds)))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart, the header first."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
