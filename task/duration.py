"""Durations as people write them: ``250ms``, ``30s``, ``5m``, ``2h``, ``7d``; a bare number is
seconds. One parser and one settings type, so ``--task-timeout 30s``, ``worker_kill_time = "1m"``
in a TOML file and ``delay=30s`` in a retry rule all mean the same thing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from task.errors import ConfigError

__all__ = ["Duration", "format_duration", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds in ``text`` (``250ms``, ``30s``, ``5m``, ``2h``, ``7d``; a bare number is seconds).

    Raises:
        ConfigError: ``text`` is not a duration.
    """
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"{what}: {text!r} is not a duration; use e.g. 250ms, 30s, 5m, 2h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    """``seconds`` the way people read them, with a unit: ``250ms``, ``30s``, ``5m``, ``1h30m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms" if seconds else "0s"
    if seconds < 60:
        return f"{seconds:.3g}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    text = "".join(f"{n}{unit}" for n, unit in parts if n)
    return text or "0s"


def _to_seconds(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("duration: ")) from err
    return value


#: A settings field in seconds that also takes ``30s``, ``5m``, ``2h``... (plain numbers are
#: seconds). Combine with ``Field(ge=0)`` and the like for bounds.
Duration = Annotated[float, BeforeValidator(_to_seconds)]
