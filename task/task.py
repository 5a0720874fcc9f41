"""The task: a small unit of work as one JSON object, byte-compatible with Go's pcelvng/task.

Every field is a string, as in Go. Times the library sets are RFC 3339 UTC seconds; times
read from the wire are validated and written back exactly as they came. msgspec reads and
writes the common case; the rare strings where its bytes would differ from Go's (``\\b``,
``\\f``, U+2028/U+2029, lone surrogates, invalid UTF-8) and the documents it refuses (a null
field, which Go reads as empty) take the hand-written Go-rule paths, so the wire bytes are
always Go's. Where Go's decoder is lax we are strict (see ``Task.from_json``), because a
worker that runs an empty task because a key was spelt ``TYPE`` helps nobody.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec

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
#: the fields written even when empty, as Go's struct tags say (no ``omitempty``)
_ALWAYS_WRITTEN = frozenset({"type", "info"})
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: Time strings already checked, mapped to "names the zero instant"; tasks from one
#: taskmaster share their created second, so this saves the check on the hot path.
_checked_times: dict[str, bool] = {}
_CHECKED_TIMES_MAX = 4096


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode
#: Where msgspec's output differs from Go's: ``\b`` and ``\f`` (Go writes ``\u0008`` and
#: ``\u000c``) and raw U+2028/U+2029 (Go escapes them). A literal backslash before a ``b`` also
#: matches: that costs the slow path, never a wrong byte.
_LS, _PS = "\u2028".encode(), "\u2029".encode()
_BACKSLASH, _E2 = ord("\\"), 0xE2  #: the first bytes of those, as ints for a fast ``in``


_encode = msgspec.json.Encoder().encode


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


def _preview(data: bytes | bytearray | str) -> str:
    """The first bytes of a rejected document, for an error message."""
    text = data if isinstance(data, str) else bytes(data[:80]).decode("utf-8", "replace")
    return repr(text[:80])


class Task(msgspec.Struct):
    """One task. Build one with ``Task.new``; read one with ``Task.from_json``.

    A msgspec ``Struct``, so the decoder builds it in C, checking every field is a string,
    without a Python constructor call per task; it behaves as a slotted dataclass would
    (positional or keyword fields, ``==``, ``repr``), and ``copy`` replaces fields.
    """

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
        try:  # valid UTF-8, an object whose fields of ours are strings: the common case
            task = _decode_task(data) if cls is Task else msgspec.json.decode(data, type=cls)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # ValidationError
            return cls._from_json_lax(data)  # is a DecodeError. Go's leniency, or why it is no task
        if not task.type:
            return cls._from_json_lax(data)  # raises, naming the empty type
        if task.started or task.ended:
            task._drop_zero_times()
        elif task.created:  # a new task: only its created time to check
            zero = _checked_times.get(task.created)
            if zero is None:
                zero = _is_zero_time("created", task.created)
            if zero:
                task.created = ""
        return task

    def _drop_zero_times(self) -> None:
        """Check each time read from the wire; one naming Go's zero instant reads as empty."""
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value and _is_zero_time(name, value):
                setattr(self, name, "")

    @classmethod
    def _from_json_lax(cls, data: bytes | bytearray | memoryview | str) -> Task:
        """The slow path, for what the fast decoder refuses: invalid UTF-8 and lone surrogates
        become U+FFFD and a null field reads as empty, as in Go; anything else is no task and
        raises with the reason (a byte order mark, which msgspec refuses too, is named)."""
        if isinstance(data, memoryview):
            data = bytes(data)
        if not isinstance(data, str) and data.startswith(b"\xef\xbb\xbf"):
            raise InvalidTaskError("not JSON: starts with a UTF-8 byte order mark")
        if isinstance(data, str):
            text = data
        else:
            try:
                text = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                text = bytes(data).decode("utf-8", "replace")
        try:
            doc = _decode(text)
        except (ValueError, RecursionError) as err:
            raise InvalidTaskError(f"not JSON ({err}): {_preview(text)}") from err
        task = cls._from_document(doc, text)
        if "\\u" in text or "\\U" in text:
            for name in FIELDS:
                value = getattr(task, name)
                if _LONE_SURROGATE.search(value):
                    setattr(task, name, _LONE_SURROGATE.sub("\ufffd", value))
        return task

    @classmethod
    def _from_document(cls, doc: object, text: bytes | bytearray | str) -> Task:
        """A task from a decoded JSON document (``text``: its source, for error messages)."""
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
        for name in _TIME_FIELDS:
            value = values.get(name)
            if value and _is_zero_time(name, value):
                del values[name]
        return cls(**values)

    def to_json(self) -> bytes:
        """The task's wire bytes: Go's key order, empty fields left out, no trailing newline."""
        try:
            out = _encode(_WireOut(
                type=self.type, job=self.job, info=self.info, created=self.created, id=self.id,
                meta=self.meta, result=self.result, msg=self.msg, started=self.started,
                ended=self.ended,
            ))
        except UnicodeEncodeError:  # a lone surrogate (invalid UTF-8 read in): Go writes U+FFFD
            return self._to_json_go()
        # one-byte searches first (memchr): most tasks have no escape and no U+2xxx at all.
        # An int operand: ``bytes in bytes`` first tries the operand as an int and raises and
        # clears a TypeError inside, which costs more than the whole search.
        if _BACKSLASH in out and (out.find(b"\\b") >= 0 or out.find(b"\\f") >= 0):
            return self._to_json_go()
        if _E2 in out and (out.find(_LS) >= 0 or out.find(_PS) >= 0):
            return self._to_json_go()
        return out

    def _to_json_go(self) -> bytes:
        """Every byte as Go's encoder writes it, for the rare strings msgspec writes otherwise."""
        parts = []
        for name in FIELDS:
            value = getattr(self, name)
            if value or name in _ALWAYS_WRITTEN:
                parts.append(f'"{name}":{quote(value)}')
        return ("{" + ",".join(parts) + "}").encode("utf-8")

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
        return msgspec.structs.replace(self, **changes)


#: Reads a task in C: unknown keys are skipped (as Go does), each field of ours must be a
#: string; what it refuses takes ``_from_json_lax``, which gives Go's leniency or the reason.
_decode_task = msgspec.json.Decoder(Task).decode
#: The wire fields as they are written: Go's order, empty ones left out except the two Go
#: always writes (``type`` and ``info``, which have no default here). Encoding a Struct
#: costs less than building a dict of the non-empty fields.
_WireOut = msgspec.defstruct("_WireOut", [
    (name, str) if name in _ALWAYS_WRITTEN else (name, str, "") for name in FIELDS
], kw_only=True, omit_defaults=True)
