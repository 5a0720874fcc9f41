"""The age of a task from its own ``created`` time, for buses that keep no time of their own
(the file bus, the memory bus)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from task import rfc3339

__all__ = ["age_seconds", "created_age", "utcnow"]


def utcnow() -> datetime:
    """The default clock of the inspectors (tests inject their own)."""
    return datetime.now(UTC)


def age_seconds(then: datetime, now: datetime) -> float:
    """Seconds from ``then`` to ``now``, never negative (clocks of two hosts disagree)."""
    return max(0.0, (now - then).total_seconds())


def created_age(body: bytes, now: datetime) -> float | None:
    """Seconds since the task in ``body`` was created; None when it is not a task or has no
    ``created`` time (a Go taskmaster may leave it empty)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    created = doc.get("created") if isinstance(doc, dict) else None
    moment = rfc3339.parse(created) if isinstance(created, str) else None
    return None if moment is None else age_seconds(moment, now)
