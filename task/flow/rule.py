"""A phase's rule: the query string of a workflow file (``cron=0 * * * *&offset=-1h``) as a
typed value, parsed once at load so a typo is a load problem, not a 3 a.m. surprise.

The keys are the Go taskmaster's (pcelvng/task-tools ``apps/flowlord``), with stricter
reading: an unknown or misspelt key is an error (Go ignores it), ``no_alert`` takes a
boolean, ``require`` also takes bare key names, ``by`` must be one of its four values, and
durations take Go's form (``-4h``, ``1h30m``, ``10ms``) plus ``d`` and ``w``.

=============== ==============================================================================
key             meaning
=============== ==============================================================================
``cron``        when the phase starts: 5 fields, 6 with seconds first, or ``@hourly``...;
                a ``TZ=Europe/Paris`` or ``CRON_TZ=...`` prefix sets its time zone
``timezone``    the cron's time zone (IANA name) when no prefix does; default UTC
``offset``      added to the fire time to get the task's time (``-1h``: the hour before)
``job``         the job of the phase's tasks when ``task`` has no ``:job``
``files``       a glob on a file's path (``*``, ``?``, ``[a-z]``, ``**`` across ``/``)
``require``     ``{meta:key}`` (or ``key``) the parent's meta must carry for the child to run
``retry_delay`` wait before a retry (Go adds up to 40 % jitter); default 1 s, no jitter
``no_alert``    ``true``: a task that failed all its retries raises no alert
``for``         a cron phase creates a batch: one task per ``by`` from the task time over
                this span (``-24h``: the day before); both ends included
``by``          ``hour``, ``day`` (default), ``week`` or ``month`` (also ``hourly``...)
``meta``        ``key:a,b|val:1,2``: one task per position, ``{meta:key}`` filled from it
``meta-file``   a JSON-lines file, one task per line (``meta_file`` is accepted too)
=============== ==============================================================================
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo

from task.apps.schedule import CronSchedule, is_valid_cron, zone
from task.duration import parse_duration
from task.errors import ConfigError
from task.flow.file_glob import glob_regex
from task.timetemplate import shift

__all__ = ["BY_UNITS", "RULE_KEYS", "Rule", "RuleError", "parse_rule", "read_meta_file"]

#: every key a rule may carry (``meta_file`` is read as ``meta-file``)
RULE_KEYS = (
    "cron",
    "timezone",
    "offset",
    "job",
    "files",
    "require",
    "retry_delay",
    "no_alert",
    "for",
    "by",
    "meta",
    "meta-file",
)
#: the steps a batch (``for=``) walks in
BY_UNITS = ("hour", "day", "week", "month")

_ALIASES = {"meta_file": "meta-file"}
_BY = {"hour": "hour", "hourly": "hour", "day": "day", "daily": "day", "week": "week",
       "weekly": "week", "month": "month", "monthly": "month"}
#: keys that belong on the phase, not in its rule, and how to write them there
_PHASE_KEYS = {"retry": "retry = 3", "retries": "retry = 3", "dependson": 'dependsOn = "type:job"',
               "depends_on": 'dependsOn = "type:job"', "template": 'template = "?day={yyyy}-{mm}-{dd}"',
               "task": 'task = "type:job"'}
_TRUE = {"", "true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_TZ_PREFIX = re.compile(r"(?:CRON_TZ|TZ)=(\S+)\s+(.*)", re.DOTALL)
_REQUIRE = re.compile(r"\{meta:([^{}]+)\}|([\w.-]+)")
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
             "d": 86400.0, "w": 604800.0}


class RuleError(ConfigError):
    """Raised when a phase's rule string is wrong; the message names the key and the fix."""


def _duration(key: str, text: str, *, negative: bool = False) -> timedelta:
    """``text`` as Go's ``time.ParseDuration`` reads it (``-4h``, ``1h30m``, ``250ms``), plus
    ``d`` and ``w``, and a bare number as seconds (as ``task.duration`` does)."""
    spec = text.strip()
    sign = -1 if spec.startswith("-") else 1
    body = spec[1:] if spec[:1] in "+-" else spec
    seconds: float | None = None
    try:
        seconds = parse_duration(body, key)
    except ConfigError:
        pos, total = 0, 0.0
        for part in _GO_DURATION.finditer(body):
            if part.start() != pos:
                break
            total += float(part.group(1)) * _GO_UNITS[part.group(2)]
            pos = part.end()
        if body and pos == len(body):
            seconds = total
    if seconds is None:
        example = "-1h, 30m or 1h30m" if negative else "30s, 5m or 1h30m"
        raise RuleError(f"{key}={text!r} is not a duration; write e.g. {example}")
    if sign < 0 and not negative and seconds:
        raise RuleError(f"{key}={text!r} cannot be negative")
    return timedelta(seconds=sign * seconds)


def _meta(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``key:a,b|val:1,2`` as ``(("key", ("a", "b")), ("val", ("1", "2")))``."""
    pairs: list[tuple[str, tuple[str, ...]]] = []
    for entry in text.split("|"):
        key, colon, values = entry.partition(":")
        if not colon or not key.strip():
            raise RuleError(f"meta={text!r}: {entry!r} is not key:value[,value...]; "
                            "write e.g. meta=key:a,b|val:1,2")
        if any(key.strip() == k for k, _ in pairs):
            raise RuleError(f"meta={text!r}: key {key.strip()!r} given twice")
        pairs.append((key.strip(), tuple(v.strip() for v in values.split(","))))
    lengths = {len(v) for _, v in pairs}
    if len(lengths) > 1:
        counts = ", ".join(f"{k}: {len(v)}" for k, v in pairs)
        raise RuleError(f"meta={text!r}: every key needs as many values ({counts})")
    return tuple(pairs)


def _require(values: list[str]) -> tuple[str, ...]:
    keys: list[str] = []
    for value in values:
        rest = value.strip()
        while rest:
            m = _REQUIRE.match(rest)
            if m is None:
                raise RuleError(f"require={value!r}: write {{meta:key}} (several separated by ',')")
            keys.append(m.group(1) or m.group(2))
            rest = rest[m.end():].lstrip(", ")
    return tuple(keys)


def _split(text: str) -> dict[str, list[str]]:
    """The query string's keys and values, decoded as Go's ``url.ParseQuery`` does."""
    found: dict[str, list[str]] = {}
    for part in text.removeprefix("?").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        found.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return found


def _unknown(key: str, value: str) -> RuleError:
    if key == "count":
        return RuleError("count is not supported (Go's flowlord reads it but never acts on it); "
                         "remove it")
    if key.lower() in RULE_KEYS or key.lower() in _ALIASES:
        # Go reads keys case-sensitively, so its own README's ``Offset=-6h`` is ignored there
        return RuleError(f"rule key {key!r} must be written {key.lower()!r}")
    if key.lower() in _PHASE_KEYS:
        return RuleError(f"{key!r} is a phase key, not a rule key; write it on its own line "
                         f"({_PHASE_KEYS[key.lower()]})")
    head, colon, rest = key.partition(":")
    if colon and head in RULE_KEYS:  # ``require:{meta:file}``, as Go's README writes it
        return RuleError(f"{key!r} is not a rule key; did you mean {head}={rest}?")
    if not value and is_valid_cron(key):
        return RuleError(f"{key!r} is not a rule key; did you mean cron={key}?")
    close = difflib.get_close_matches(key.lower(), [*RULE_KEYS, *_ALIASES], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(RULE_KEYS)}"
    return RuleError(f"unknown rule key {key!r}{hint}")


def _cron(text: str, timezone: str) -> tuple[str, str]:
    expr, tz = text.strip(), timezone.strip()
    m = _TZ_PREFIX.fullmatch(expr)
    if m is not None:
        if tz and tz != m.group(1):
            raise RuleError(f"cron={text!r} names time zone {m.group(1)!r} and timezone= "
                            f"{tz!r}; keep one")
        tz, expr = m.group(1), m.group(2).strip()
    if tz:
        zone(tz)  # raises ConfigError naming the zone
    if expr.startswith("@every"):
        raise RuleError(f"cron={text!r}: @every is not supported; write a cron expression "
                        "such as */5 * * * *")
    if len(expr.split()) not in (1, 5, 6) or not is_valid_cron(expr):
        raise RuleError(f"cron={text!r} is not a cron expression; write 5 fields "
                        "(minute hour day month weekday), 6 with seconds first, or @hourly")
    return expr, tz


@dataclass(frozen=True)
class Rule:
    """A phase's parsed rule; every field has the value that means "not set" by default."""

    #: the rule as written
    text: str = ""
    #: cron expression without its time-zone prefix; "" for a phase cron does not start
    cron: str = ""
    #: IANA zone of the cron ("" means UTC)
    timezone: str = ""
    offset: timedelta = timedelta(0)
    job: str = ""
    #: glob on file paths; "" for a phase files do not start
    files: str = ""
    #: meta keys a parent's done task must carry (non-empty) for this child to start
    require: tuple[str, ...] = ()
    #: None: the engine's default (Go: 1 s, no jitter)
    retry_delay: timedelta | None = None
    no_alert: bool = False
    #: span of a batch from the task time (negative walks back); None: not a batch
    for_: timedelta | None = None
    #: step of a batch: one of ``BY_UNITS``
    by: str = "day"
    #: ``meta=`` as (key, values) pairs, all values lists of one length
    meta: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: ``meta-file=`` path as written
    meta_file: str = ""

    @property
    def tz(self) -> ZoneInfo:
        """The cron's time zone (UTC unless ``TZ=``/``timezone=`` says otherwise)."""
        return zone(self.timezone or "UTC")

    @property
    def is_batch(self) -> bool:
        """True when the phase makes several tasks at once (``for``, ``meta`` or ``meta-file``)."""
        return self.for_ is not None or bool(self.meta) or bool(self.meta_file)

    def schedule(self, after: datetime) -> CronSchedule:
        """The cron's fire times after ``after``.

        Raises:
            RuleError: the rule has no cron.
        """
        if not self.cron:
            raise RuleError("this rule has no cron=")
        return CronSchedule(self.cron, self.tz, after)

    @cached_property
    def _files_re(self) -> re.Pattern[str]:
        return glob_regex(self.files)

    def matches(self, path: str) -> bool:
        """True when ``path`` matches ``files=`` (whole path; False when there is no glob)."""
        return bool(self.files) and self._files_re.fullmatch(path) is not None

    def missing(self, meta: Mapping[str, str]) -> list[str]:
        """The ``require`` keys ``meta`` lacks or has empty (Go's ``isReady`` reads it so)."""
        return [key for key in self.require if not meta.get(key)]

    def meta_rows(self) -> list[dict[str, str]]:
        """``meta=`` as one mapping per task: ``key:a,b|val:1,2`` -> ``[{key: a, val: 1},
        {key: b, val: 2}]``; empty when there is no ``meta=``."""
        if not self.meta:
            return []
        width = len(self.meta[0][1])
        return [{key: values[i] for key, values in self.meta} for i in range(width)]

    def task_time(self, fired_at: datetime) -> datetime:
        """The time a cron tick's task is for, in the cron's zone (``tz``), so that ``{dd}``
        is the date where the cron runs: ``fired_at`` plus ``offset`` (elapsed time, as Go
        adds a ``time.Duration``), cut to the hour for a batch as Go does."""
        at = (fired_at.astimezone(UTC) + self.offset).astimezone(self.tz)
        if self.is_batch:
            at = at.replace(minute=0, second=0, microsecond=0)
        return at

    def batch_times(self, start: datetime) -> list[datetime]:
        """The times of a batch from ``start`` (see ``task_time``): from ``start`` to
        ``start + for`` by ``by``, both ends included, in the direction of ``for`` (Go's
        ``Batch.Range``); ``[start]`` when ``for`` is not set. Days, weeks and months step the
        calendar in ``start``'s zone; a month from Jan 31 lands on Mar 2 or 3 as in Go."""
        if not self.for_:
            return [start]
        # compared in UTC: Python compares two times of one zone by their wall clocks
        end = (start.astimezone(UTC) + self.for_).astimezone(start.tzinfo)
        forward = self.for_ > timedelta(0)
        lo, hi = (start, end) if forward else (end, start)
        times: list[datetime] = []
        t = lo
        while t.astimezone(UTC) <= hi.astimezone(UTC):
            times.append(t)
            t = _step(t, self.by)
        return times if forward else times[::-1]


def _step(t: datetime, by: str) -> datetime:
    if by == "hour":
        return (t.astimezone(UTC) + timedelta(hours=1)).astimezone(t.tzinfo)
    if by == "week":
        return shift(t, timedelta(days=7))
    if by == "month":
        year, month = divmod(t.month, 12)  # t.month == 12 -> next January
        first = t.replace(year=t.year + year, month=month + 1, day=1)
        return shift(first, timedelta(days=t.day - 1))  # Go's AddDate normalises Jan 31 + 1
    return shift(t, timedelta(days=1))


def parse_rule(text: str) -> Rule:
    """``text`` (a query string, an optional leading ``?``) as a ``Rule``.

    Raises:
        RuleError: an unknown or repeated key, a bad value, ``meta`` with ``meta-file``,
            ``by`` without ``for``; the message names the key and what to write.
        ConfigError: an unknown time zone.
    """
    values = _split(text)
    fields: dict[str, str] = {}
    for raw, given in values.items():
        key = _ALIASES.get(raw, raw)
        if key not in RULE_KEYS:
            raise _unknown(raw, given[0])
        if key in fields or (len(given) > 1 and key != "require"):
            raise RuleError(f"rule key {key!r} is given twice; keep one")
        fields[key] = given[0]
    rule: dict[str, object] = {"text": text}
    if "cron" in fields or "timezone" in fields:
        if not fields.get("cron", "").strip():
            raise RuleError("timezone= needs a cron=" if "cron" not in fields else "cron= is empty")
        rule["cron"], rule["timezone"] = _cron(fields["cron"], fields.get("timezone", ""))
    if "offset" in fields:
        rule["offset"] = _duration("offset", fields["offset"], negative=True)
    if "job" in fields:
        if not fields["job"].strip() or ":" in fields["job"]:
            raise RuleError(f"job={fields['job']!r}: write a job name without ':'")
        rule["job"] = fields["job"].strip()
    if "files" in fields:
        if not fields["files"].strip():
            raise RuleError("files= is empty; write a glob such as gs://bucket/*/*.gz")
        try:
            glob_regex(fields["files"].strip())
        except ValueError as err:
            raise RuleError(f"files={fields['files'].strip()!r}: {err}") from err
        rule["files"] = fields["files"].strip()
    if "require" in values:
        rule["require"] = _require(values["require"])
    if "retry_delay" in fields:
        rule["retry_delay"] = _duration("retry_delay", fields["retry_delay"])
    if "no_alert" in fields:
        flag = fields["no_alert"].strip().lower()
        if flag not in _TRUE | _FALSE:
            raise RuleError(f"no_alert={fields['no_alert']!r}: write no_alert=true or false")
        rule["no_alert"] = flag in _TRUE
    if "for" in fields:
        rule["for_"] = _duration("for", fields["for"], negative=True)
    if "by" in fields:
        by = _BY.get(fields["by"].strip().lower())
        if by is None:
            raise RuleError(f"by={fields['by']!r}: write by=hour, day, week or month")
        if "for" not in fields:
            raise RuleError("by= needs for= (the span the batch covers, e.g. for=-24h&by=hour)")
        rule["by"] = by
    if "meta" in fields:
        rule["meta"] = _meta(fields["meta"])
    if "meta-file" in fields:
        if not fields["meta-file"].strip():
            raise RuleError("meta-file= is empty; write the path of a JSON-lines file")
        if "meta" in fields:
            raise RuleError("meta= and meta-file= cannot be used together; keep one")
        rule["meta_file"] = fields["meta-file"].strip()
    return Rule(**rule)  # type: ignore[arg-type]


def _text(value: object) -> str:
    """A JSON value as Go's ``tmpl.GetMap.Get`` prints it (numbers without exponent)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format(Decimal(repr(value)).normalize(), "f")
    return json.dumps(value, separators=(",", ":"))


def read_meta_file(path: Path) -> list[dict[str, str]]:
    """The rows of a ``meta-file``: one JSON object a line (blank lines skipped), values as
    text.

    Raises:
        ConfigError: the file cannot be read or a line is not a JSON object.
    """
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"meta-file {path}: cannot read it ({err.strerror or err})") from err
    rows: list[dict[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"meta-file {path}: line {number} is not JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise ConfigError(f"meta-file {path}: line {number} is not a JSON object")
        rows.append({str(k): _text(v) for k, v in row.items()})
    return rows
