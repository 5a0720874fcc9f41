"""RFC 3339 times as the Go toolkit reads and writes them.

Go checks a task's time strings with ``time.Parse(time.RFC3339, s)`` and keeps the string
as it came; it writes the times it sets as UTC, truncated to the second. Python's
``datetime.fromisoformat`` accepts much more (a space for ``T``, no zone, ``+0530``) and
cannot hold every instant Go accepts (year 0 or 10000 once an offset is applied), so the
check here is a strict pattern plus integer arithmetic, never ``datetime`` overflow.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta

__all__ = ["check", "format_utc", "is_zero_instant", "now_utc", "parse", "utc_text"]

_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?(Z|([+-])(\d{2}):(\d{2}))\Z"
)
#: Seconds from 0001-01-01T00:00:00 to the Unix epoch counted as ``toordinal`` days do.
_ZERO_INSTANT = 86400  # ordinal of 0001-01-01 is 1


def format_utc(moment: datetime) -> str:
    """``moment`` in UTC, truncated to the second: ``2001-01-01T05:01:01Z``."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no instant; pass an aware one (tz=UTC)")
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


_second_cache: tuple[int, str] = (0, "")


def now_utc() -> str:
    """The current time as the library writes it."""
    return utc_text(time.time())


def utc_text(moment: float) -> str:
    """Unix time ``moment`` as the library writes times, truncated to the second
    (``2001-01-01T05:01:01Z``); cached per second: every done task is stamped twice."""
    global _second_cache
    second = int(moment)
    if second != _second_cache[0]:
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _second_cache[1]


def _fields(text: str) -> tuple[int, str, int] | None:
    """(seconds since 0001-01-01 in the ordinal calendar, fraction digits, offset) or None."""
    m = _PATTERN.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        return None
    if year == 0 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    offset = 0
    if m.group(8) != "Z":
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_m > 59:
            return None
        offset = (off_h * 3600 + off_m * 60) * (-1 if m.group(9) == "-" else 1)
    days = datetime(year, month, day).toordinal()
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds, m.group(7) or "", offset


def check(text: str) -> bool:
    """True when Go's ``time.Parse(time.RFC3339, text)`` accepts ``text``."""
    return _fields(text) is not None


def is_zero_instant(text: str) -> bool:
    """True when ``text`` names Go's zero time (``0001-01-01T00:00:00Z`` in any spelling)."""
    parsed = _fields(text)
    return parsed is not None and parsed[0] == _ZERO_INSTANT and parsed[1].strip("0") == ""


def parse(text: str) -> datetime | None:
    """The instant ``text`` names, in UTC, or None when it is empty, invalid or out of range.

    Python keeps microseconds; Go keeps nanoseconds. Years 0 and 10000, which Go accepts
    after applying an offset, give None.
    """
    parsed = _fields(text) if text else None
    if parsed is None:
        return None
    seconds, fraction, _ = parsed
    micros = int((fraction + "000000")[:6])
    days, rest = divmod(seconds, 86400)
    if not 1 <= days <= 3652059:
        return None
    return datetime.fromordinal(days).replace(tzinfo=UTC) + timedelta(seconds=rest, microseconds=micros)
