"""The dead-letter envelope: how a message that is not a task, or that gave up, is kept.

One JSON object per rejected message (DESIGN.md): ``reason``, ``topic``, ``attempts``,
``received`` and the original ``body`` (``body_b64`` when it is not UTF-8), cut to a size
every bus carries and marked ``truncated`` when cut. Shared by the Launcher and by buses
that dead-letter on their own (JetStream past max deliveries).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

__all__ = ["DEAD_LETTER_MAX_BYTES", "dead_letter_envelope"]

#: Bytes of the original body kept (NATS's default max payload is 1 MiB).
DEAD_LETTER_MAX_BYTES = 900_000


def dead_letter_envelope(body: bytes, reason: str, topic: str, attempts: int) -> bytes:
    """The dead-letter record of a rejected message (DESIGN.md's envelope)."""
    doc: dict[str, object] = {
        "reason": reason,
        "topic": topic,
        "attempts": attempts,
        "received": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    kept = body[:DEAD_LETTER_MAX_BYTES]
    try:
        doc["body"] = kept.decode("utf-8")
    except UnicodeDecodeError:
        doc["body_b64"] = base64.b64encode(kept).decode("ascii")
    if len(kept) < len(body):
        doc["truncated"] = True
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
