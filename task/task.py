"""The task: a small unit of work as one JSON object, byte-compatible with Go's pcelvng/task.

Every field is a string, as in Go. Times the library sets are RFC 3339 UTC seconds; times
read from the wire are validated and written back exactly as they came. Where Go's decoder
is lax we are strict (see ``Task.from_json``), because a worker that runs an empty task
because a key was spelt ``TYPE`` helps nobody.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from task import rfc3339
from task.codec import quote
from task.errors import InvalidTaskError
from task.meta import encode_query, parse_query
from task.result import Result

__all__ = ["Task"]

#: The wire fields in Go's struct order; the encoder writes them in this order.
FIELDS = ("type", "job", "info", "created", "id", "meta", "result", "msg", "started", "ended")
_FIELD_SET = frozenset(FIELDS)
_TIME_FIELDS = ("created", "started", "ended")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: Time strings already checked, mapped to "names the zero instant"; tasks from one
#: taskmaster share their created second, so this saves the check on the hot path.
_checked_times: dict[str, bool] = {}
_CHECKED_TIMES_MAX = 4096


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def _is_zero_time(name: str, value: str) -> bool:
    """True when ``value`` is Go's zero time; raises when it is no RFC 3339 time at all."""
    known = _checked_times.get(value)
    if known is not None:
        return known
    if not rfc3339.check(value):
        raise InvalidTaskError(
            f'"{name}" is not an RFC 3339 time: {value[:64]!r} (expected e.g. 2001-01-01T05:01:01Z)'
        )
    zero = rfc3339.is_zero_instant(value)
    if len(_checked_times) >= _CHECKED_TIMES_MAX:
        _checked_times.clear()
    _checked_times[value] = zero
    return zero


def _preview(data: bytes | str) -> str:
    """The first bytes of a rejected document, for an error message."""
    text = data if isinstance(data, str) else data[:80].decode("utf-8", "replace")
    return repr(text[:80])


@dataclass(slots=True)
class Task:
    """One task. Build one with ``Task.new``; read one with ``Task.from_json``."""

    type: str
    info: str = ""
    job: str = ""
    created: str = ""
    id: str = ""
    meta: str = ""
    result: str = ""
    msg: str = ""
    started: str = ""
    ended: str = ""

    @classmethod
    def new(
        cls,
        type: str,
        info: str,
        id: str | None = None,
        job: str | None = None,
        meta: str | Mapping[str, str | Sequence[str]] | None = None,
    ) -> Task:
        """A new task created now, with a random UUID4 id unless ``id`` is given.

        ``meta`` is a query string (``a=1&b=x``) or a mapping that is encoded into one.

        Raises:
            ValueError: ``type`` is empty.
        """
        if not type:
            raise ValueError("a task needs a non-empty type")
        if meta is not None and not isinstance(meta, str):
            meta = encode_query({k: [v] if isinstance(v, str) else list(v) for k, v in meta.items()})
        return cls(
            type=type,
            info=info,
            job=job or "",
            created=rfc3339.now_utc(),
            id=str(uuid.uuid4()) if id is None else id,
            meta=meta or "",
        )

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> Task:
        """Read a task from its JSON text.

        Accepts what Go's ``NewFromBytes`` accepts (invalid UTF-8 and lone surrogates become
        U+FFFD, unknown keys are ignored, a zero time reads as empty), except that keys match
        exactly and the document must be an object with a non-empty string ``type``.

        Raises:
            InvalidTaskError: not JSON, not an object, no ``type``, a field that is not a
                string, or a time that is not RFC 3339.
        """
        if isinstance(data, str):
            text = data
        else:
            raw = bytes(data)
            if raw.startswith(b"\xef\xbb\xbf"):
                raise InvalidTaskError("not JSON: starts with a UTF-8 byte order mark")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "replace")
        try:
            doc = _decode(text)
        except (ValueError, RecursionError) as err:
            raise InvalidTaskError(f"not JSON ({err}): {_preview(text)}") from err
        if not isinstance(doc, dict):
            kind = "null" if doc is None else type(doc).__name__
            raise InvalidTaskError(f"a task is a JSON object, got {kind}: {_preview(text)}")
        values: dict[str, str] = {}
        for name, value in doc.items():
            if name not in _FIELD_SET or value is None:
                continue
            if not isinstance(value, str):
                raise InvalidTaskError(
                    f'"{name}" must be a string, got {type(value).__name__}: {_preview(text)}'
                )
            values[name] = value
        if not values.get("type"):
            raise InvalidTaskError(f'a task needs a non-empty string "type": {_preview(text)}')
        if "\\u" in text or "\\U" in text:
            for name, value in values.items():
                values[name] = _LONE_SURROGATE.sub("\ufffd", value)
        for name in _TIME_FIELDS:
            value = values.get(name)
            if value and _is_zero_time(name, value):
                del values[name]
        return cls(**values)

    def to_json(self) -> bytes:
        """The task's wire bytes: Go's key order, empty fields left out, no trailing newline."""
        parts = ['{"type":', quote(self.type)]
        if self.job:
            parts += [',"job":', quote(self.job)]
        parts += [',"info":', quote(self.info)]
        if self.created:
            parts += [',"created":', quote(self.created)]
        if self.id:
            parts += [',"id":', quote(self.id)]
        if self.meta:
            parts += [',"meta":', quote(self.meta)]
        if self.result:
            parts += [',"result":', quote(self.result)]
        if self.msg:
            parts += [',"msg":', quote(self.msg)]
        if self.started:
            parts += [',"started":', quote(self.started)]
        if self.ended:
            parts += [',"ended":', quote(self.ended)]
        parts.append("}")
        return "".join(parts).encode("utf-8")

    def __str__(self) -> str:
        return self.to_json().decode("utf-8")

    def start(self, at: datetime | None = None) -> None:
        """Mark the task started now (or ``at``)."""
        self.started = rfc3339.now_utc() if at is None else rfc3339.format_utc(at)

    def end(self, result: Result | str, msg: str, at: datetime | None = None) -> None:
        """Record the outcome; ``ended`` is set now (or ``at``). Calling it again overwrites."""
        self.result = str(result)
        self.msg = msg
        self.ended = rfc3339.now_utc() if at is None else rfc3339.format_utc(at)

    def get_meta(self, key: str, default: str = "") -> str:
        """The first value of ``key`` in ``meta``, or ``default``."""
        return parse_query(self.meta).get(key, [default])[0]

    def meta_values(self) -> dict[str, list[str]]:
        """Every key of ``meta`` with all its values."""
        return parse_query(self.meta)

    def set_meta(self, key: str, *values: str) -> None:
        """Replace ``key`` in ``meta`` with ``values`` (none removes it); ``meta`` stays encoded."""
        current = parse_query(self.meta)
        if values:
            current[key] = list(values)
        else:
            current.pop(key, None)
        self.meta = encode_query(current)

    @property
    def created_at(self) -> datetime | None:
        """``created`` as an aware UTC datetime, or None when empty or out of range."""
        return rfc3339.parse(self.created)

    @property
    def started_at(self) -> datetime | None:
        """``started`` as an aware UTC datetime, or None."""
        return rfc3339.parse(self.started)

    @property
    def ended_at(self) -> datetime | None:
        """``ended`` as an aware UTC datetime, or None."""
        return rfc3339.parse(self.ended)

    def copy(self, **changes: str) -> Task:
        """A copy of the task, with ``changes`` applied."""
        return replace(self, **changes)


