"""Time templates: the one place every app turns a time into a path or info string and back.

Placeholders are the Go toolkit's (pcelvng/task-tools ``tmpl``), so a template written for a
Go taskmaster renders the same here, with a few things Go lacks: any letter case, ``{meta:key}``
inside ``render``, and one ``{uuid}`` value per rendering (Go replaces only the first).

===================  ===========================================  =======================
placeholder          value                                        2024-01-31 05:07:09
===================  ===========================================  =======================
``{yyyy}`` ``{yy}``  year, four or two digits                     ``2024`` ``24``
``{mm}``             month (not minutes)                          ``01``
``{dd}`` ``{hh}``    day, hour (24 h)                             ``31`` ``05``
``{min}``            minutes                                      ``07``
``{ts}``             ``20060102T150405`` layout                   ``20240131T050709``
``{slug}``           alias of ``{hour_slug}``: ``yyyy/mm/dd/hh``  ``2024/01/31/05``
``{day_slug}``       ``yyyy/mm/dd``                               ``2024/01/31``
``{month_slug}``     ``yyyy/mm``                                  ``2024/01``
``{host}``           this machine's host name                     ``web-7d9f-x2k4q``
``{pod}``            last two ``-`` parts of the host name        ``7d9f-x2k4q``
``{uuid}``           8 random hex characters                      ``9f1c2ab0``
``{meta:key}``       the first value of ``key`` in the meta given
===================  ===========================================  =======================

Placeholders match in any letter case (``{YYYY}``, ``{Day_Slug}``). Text from the first ``#``
on is kept verbatim, so a fragment can carry literal braces. Unknown ``{...}`` stay as they
are (info strings may hold JSON); ``unknown_placeholders`` lets an app warn about typos.
A time renders in its own zone: convert it with ``astimezone`` first to render another.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache

__all__ = [
    "extract_time",
    "parse_offset",
    "parse_time",
    "render",
    "shift",
    "unknown_placeholders",
]

#: meta values as callers hold them: a query-string mapping or plain strings
MetaValues = Mapping[str, str | Sequence[str]]

_SLUGS = {
    "slug": "{yyyy}/{mm}/{dd}/{hh}",
    "hour_slug": "{yyyy}/{mm}/{dd}/{hh}",
    "day_slug": "{yyyy}/{mm}/{dd}",
    "month_slug": "{yyyy}/{mm}",
}
_KNOWN = {"yyyy", "yy", "mm", "dd", "hh", "min", "ts", "host", "pod", "uuid", *_SLUGS}
_PLACEHOLDER = re.compile(r"\{((?i:meta):[^{}]*|[A-Za-z_]+)\}")
_OFFSET_PART = re.compile(r"(\d+(?:\.\d+)?)([a-z]+)")
_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@cache
def _hostname() -> str:
    return socket.gethostname() or "hostname"


def _pod(host: str) -> str:
    """The pod part of a Kubernetes host name (``app-7d9f-x2k4q`` -> ``7d9f-x2k4q``)."""
    return "-".join(host.split("-")[-2:])


def _meta_value(meta: MetaValues, key: str) -> str:
    value = meta.get(key, "")
    if isinstance(value, str):
        return value
    return value[0] if value else ""


def render(
    template: str,
    at: datetime,
    *,
    meta: MetaValues | None = None,
    host: str | None = None,
) -> str:
    """``template`` with its placeholders replaced by the parts of ``at`` (see the module doc).

    ``{meta:key}`` is replaced only when ``meta`` is given (a missing key renders empty), so
    a template can be rendered for its time first and for a task's meta later. ``host``
    overrides the machine's host name for ``{host}`` and ``{pod}``.
    """
    head, hash_, tail = template.partition("#")
    hostname = host if host is not None else _hostname()
    values = {
        "yyyy": f"{at.year:04d}",
        "yy": f"{at.year % 100:02d}",
        "mm": f"{at.month:02d}",
        "dd": f"{at.day:02d}",
        "hh": f"{at.hour:02d}",
        "min": f"{at.minute:02d}",
        "ts": at.strftime("%Y%m%dT%H%M%S"),
        "host": hostname,
        "pod": _pod(hostname),
    }
    one_uuid: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name[:5].lower() == "meta:":
            return _meta_value(meta, name[5:]) if meta is not None else match.group(0)
        key = name.lower()
        if key in _SLUGS:
            return _SLUGS[key].format(**{k: values[k] for k in ("yyyy", "mm", "dd", "hh")})
        if key == "uuid":
            if not one_uuid:
                one_uuid.append(uuid.uuid4().hex[:8])
            return one_uuid[0]
        return values.get(key, match.group(0))

    return _PLACEHOLDER.sub(replace, head) + hash_ + tail


def unknown_placeholders(template: str) -> list[str]:
    """The ``{...}`` in ``template`` (before any ``#``) that ``render`` does not know,
    so an app can warn about a typo like ``{yyy}`` at start-up."""
    head = template.partition("#")[0]
    return [
        m.group(0)
        for m in _PLACEHOLDER.finditer(head)
        if m.group(1).lower() not in _KNOWN and m.group(1)[:5].lower() != "meta:"
    ]


def parse_offset(text: str) -> timedelta:
    """An offset like ``-1h``, ``+2d``, ``90m``, ``1h30m`` or ``1w`` as a timedelta.

    Units: ``s``, ``m``/``min``, ``h``, ``d``, ``w``; no sign means forward; empty means none.

    Raises:
        ValueError: ``text`` is not an offset; the message shows the accepted form.
    """
    spec = text.strip().lower().replace(" ", "")
    if not spec:
        return timedelta(0)
    sign = -1 if spec[0] == "-" else 1
    body = spec[1:] if spec[0] in "+-" else spec
    seconds, pos = 0.0, 0
    for part in _OFFSET_PART.finditer(body):
        if part.start() != pos or part.group(2) not in _UNITS:
            break
        seconds += float(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    if not body or pos != len(body):
        raise ValueError(
            f"offset {text!r} is not a duration; write e.g. -1h, +2d, 30m or 1h30m "
            "(units s, m, h, d, w)"
        )
    return timedelta(seconds=sign * seconds)


def shift(at: datetime, offset: str | timedelta) -> datetime:
    """``at`` moved by ``offset`` (a timedelta or text for ``parse_offset``).

    A whole number of days moves the calendar date and keeps the wall-clock time in
    ``at``'s zone (across a DST change, ``-1d`` from 05:00 is 05:00 the day before, 23 or 25
    hours away); any other offset is elapsed time. A wall time that does not exist (in a
    DST gap) is read with the offset before the gap, so it lands after it (02:30 -> 03:30).

    Raises:
        ValueError: ``offset`` is text that is not an offset.
    """
    delta = parse_offset(offset) if isinstance(offset, str) else offset
    if not delta:
        return at
    if at.tzinfo is None:
        return at + delta
    zone = at.tzinfo
    if delta % timedelta(days=1) == timedelta(0):
        moved = at + delta  # aware + timedelta is wall-clock arithmetic in the same zone
        return moved.astimezone(UTC).astimezone(zone)
    return (at.astimezone(UTC) + delta).astimezone(zone)


_TIME_FORMS = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2})(?::(\d{2})(?::(\d{2}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?\Z"
)


def parse_time(text: str, tz: tzinfo = UTC, *, now: datetime | None = None) -> datetime:
    """A time a user typed: ``2024-01-31``, ``2024-01-31T05``, ``2024-01-31T05:30[:00]``,
    with an optional ``Z`` or ``+02:00``; ``now``, ``today`` or an offset from now (``-3d``).

    A time without a zone is wall time in ``tz``. The result is aware, in ``tz``.

    Raises:
        ValueError: ``text`` is none of these forms; the message lists them.
    """
    spec = text.strip()
    current = (now or datetime.now(UTC)).astimezone(tz)
    if spec.lower() == "now":
        return current
    if spec.lower() == "today":
        midnight = current.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        return midnight.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
    if spec[:1] in ("+", "-"):
        return shift(current, parse_offset(spec))
    m = _TIME_FORMS.match(spec)
    if m is None:
        raise ValueError(
            f"time {text!r} not understood; write 2024-01-31, 2024-01-31T05, "
            "2024-01-31T05:30:00Z, now, today or an offset from now like -3d"
        )
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in m.groups()[:6])
    zone = m.group(7)
    try:
        wall = datetime(year, month, day, hour, minute, second)
    except ValueError as err:
        raise ValueError(f"time {text!r} is not a real date or time: {err}") from err
    if zone is None:
        return wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
    if zone == "Z":
        return wall.replace(tzinfo=UTC).astimezone(tz)
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return (wall - sign * offset).replace(tzinfo=UTC).astimezone(tz)


# What ``extract_time`` looks for, most precise first; Go's InfoTime/PathTime order.
_INFO_FORMS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?:day|date)[=:](\d{4}-\d{2}-\d{2})(?!\d)"), "%Y-%m-%d"),
    (re.compile(r"(?:hour_utc|hour)[=:](\d{4}-\d{2}-\d{2}T\d{2})(?!\d)"), "%Y-%m-%dT%H"),
    (re.compile(r"time(?:stamp)?[=:](\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})Z"), "%Y-%m-%dT%H:%M:%S"),
]
_PATH_FORMS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?<!\d)(\d{4}/\d{2}/\d{2}/\d{2})(?!\d)"), "%Y/%m/%d/%H"),
    (re.compile(r"(?<!\d)(\d{4}/\d{2}/\d{2})(?!\d)"), "%Y/%m/%d"),
    (re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)"), "%Y-%m-%d"),
    (re.compile(r"(?<!\d)(\d{4}/\d{2})(?!\d)"), "%Y/%m"),
]
_TS_FORM = (re.compile(r"(?<!\d)(\d{8}T\d{6})(?!\d)"), "%Y%m%dT%H%M%S")


def _first(text: str, forms: list[tuple[re.Pattern[str], str]]) -> datetime | None:
    for pattern, layout in forms:
        for m in pattern.finditer(text):
            try:
                return datetime.strptime(m.group(1), layout)
            except ValueError:
                continue  # 2024/13/01 is no date; a later match may be
    return None


def extract_time(text: str, tz: tzinfo = UTC) -> datetime | None:
    """The time a path or info string names, or None.

    Looked for in this order (the Go toolkit's): ``day=``/``date=2024-01-31``,
    ``hour=``/``hour_utc=2024-01-31T05``, ``time=``/``timestamp=2024-01-31T05:00:00Z``; then
    in the file name ``20240131T050000``; then in the path (before any ``?``) an hour slug
    ``2024/01/31/05``, a day slug ``2024/01/31``, a date ``2024-01-31``, a month slug
    ``2024/01``. Wall times are read in ``tz`` (default UTC); the result is aware, in ``tz``.
    """
    path = text.split("?", 1)[0]
    name = path.rsplit("/", 1)[-1]
    found = _first(text, _INFO_FORMS[:2])
    stamp = _first(text, _INFO_FORMS[2:])
    if found is None and stamp is not None:
        return stamp.replace(tzinfo=UTC).astimezone(tz)
    if found is None:
        found = _first(name, [_TS_FORM]) or _first(path, _PATH_FORMS)
    if found is None:
        return None
    return found.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)
