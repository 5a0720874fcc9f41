"""Reading dead-letter envelopes (``task.bus.deadletter``) back: what ``taskbus dlq`` shows
and replays."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from task.errors import InvalidTaskError
from task.task import Task

__all__ = ["DeadLetter", "parse_dead_letter"]


@dataclass(frozen=True)
class DeadLetter:
    """One envelope as stored on the dead-letter topic, and the original body it keeps."""

    #: the envelope's bytes, exactly as on the bus
    raw: bytes
    reason: str
    #: the topic the original came from, where a replay sends it back
    topic: str
    attempts: int
    received: str
    #: the original body (decoded from ``body_b64`` where it was not UTF-8); None if unreadable
    body: bytes | None
    truncated: bool = False

    @property
    def task_id(self) -> str | None:
        """The id of the task in the body, when the body is a task with one."""
        if self.body is None:
            return None
        try:
            return Task.from_json(self.body).id or None
        except InvalidTaskError:
            return None

    @property
    def why_not_replayable(self) -> str | None:
        """None when a replay can send the body back; otherwise why not, in one line."""
        if self.body is None:
            return "not a dead-letter envelope: no body to send"
        if not self.topic:
            return "the envelope names no topic to send the body back to"
        if self.truncated:
            return "the body was cut to fit the dead-letter topic: sending it would send part of a task"
        return None


def parse_dead_letter(raw: bytes) -> DeadLetter:
    """The envelope in ``raw``; anything else becomes a DeadLetter with no body, so a stray
    message on the dead-letter topic is shown rather than breaking the listing."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return DeadLetter(raw, "(not a dead-letter envelope)", "", 0, "", None)
    body: bytes | None = None
    if isinstance(doc.get("body"), str):
        body = doc["body"].encode("utf-8")
    elif isinstance(doc.get("body_b64"), str):
        try:
            body = base64.b64decode(doc["body_b64"], validate=True)
        except (binascii.Error, ValueError):
            body = None
    attempts = doc.get("attempts")
    return DeadLetter(
        raw=raw,
        reason=str(doc.get("reason", "")),
        topic=str(doc.get("topic", "")),
        attempts=attempts if isinstance(attempts, int) else 0,
        received=str(doc.get("received", "")),
        body=body,
        truncated=doc.get("truncated") is True,
    )
