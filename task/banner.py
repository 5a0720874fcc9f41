"""The one INFO line every long-running app logs when it starts: what it reads, where it
sends, which ledger, which status port. A user reading the log knows at once what runs where;
URLs pass through ``redact_url`` so no secret reaches a log."""

from __future__ import annotations

import logging

from task.url import redact_url

__all__ = ["log_startup"]


def log_startup(logger: logging.Logger, app: str, **fields: object) -> None:
    """Log ``app starting: key=value ...`` at INFO. Empty values are left out; any value that
    looks like a URL is redacted (``nats://u:***@h``)."""
    parts = []
    for name, value in fields.items():
        if value in ("", None):
            continue
        text = redact_url(value) if isinstance(value, str) and ":" in value else str(value)
        parts.append(f"{name}={text}")
    logger.info("%s starting: %s", app, " ".join(parts))
