"""Backloads: the tasks of one phase over a span of time, as ``POST /backload`` asks.

Go's flowlord takes ``task`` (and ``job``), ``from``/``to`` or ``at``, ``by`` (hour, day,
week, month; day by default) and ``meta`` (an object of strings or of lists, one task per
position) and answers a dry run unless ``execute`` is true. Here too, with ``every`` (a
duration, ``6h``) as another step, stricter reading (an unknown key, a bad time, ``to``
before ``from`` or too many tasks is a 400 naming what to write), and Go's notes when a
default was used. The tasks carry the batch meta Go gives them (``cron``, ``job``,
``workflow``, the row's template keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from task.duration import parse_duration
from task.errors import ConfigError
from task.flow.loader import WorkflowSet
from task.flow.phase_tasks import batch_rows, make_tasks
from task.flow.template import MissingMeta
from task.flow.workflow import Phase, split_key
from task.task import Task
from task.timetemplate import parse_time

__all__ = ["BackloadPlan", "BackloadRequest", "plan_backload"]

#: Most tasks one backload may create.
MAX_TASKS = 10_000
_BY = {"hour": "hour", "hourly": "hour", "day": "day", "daily": "day", "week": "week",
       "weekly": "week", "month": "month", "monthly": "month"}


class BackloadRequest(BaseModel):
    """The JSON body of ``POST /backload``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    task: str = Field(min_length=1, description="the phase: type or type:job")
    job: str = ""
    workflow: str = ""
    start: str = Field("", alias="from")
    end: str = Field("", alias="to")
    at: str = ""
    by: str = ""
    every: str = ""
    meta: dict[str, str | list[str]] = Field(default_factory=dict)
    execute: bool = False


@dataclasses.dataclass
class BackloadPlan:
    """What a backload makes: its phase, tasks and the notes Go's answer carries."""

    phase: Phase
    tasks: list[Task]
    notes: list[str]


def _rows(req: BackloadRequest, phase: Phase) -> list[dict[str, str]]:
    if not req.meta:
        return batch_rows(phase)
    values = {k: [v] if isinstance(v, str) else v for k, v in req.meta.items()}
    widths = {len(v) for v in values.values()}
    if len(widths) != 1:
        raise ConfigError("meta lists differ in length; give each key as many values")
    width = widths.pop()
    return [{k: v[i] for k, v in values.items()} for i in range(width)]


def _times(req: BackloadRequest, phase: Phase, now: datetime, notes: list[str]) -> list[datetime]:
    def read(name: str, text: str) -> datetime:
        try:
            return parse_time(text, UTC, now=now)
        except ValueError as err:
            raise ConfigError(f"{name}: {err}") from err

    if req.at:
        start = end = read("at", req.at)
    elif req.start or req.end:
        start = read("from", req.start or req.end)
        end = read("to", req.end or req.start)
        if not req.end:
            notes.append("to value not set")
        if not req.start:
            notes.append("from value not set")
    else:
        notes.append("no time provided using today")
        start = end = read("at", "today")
    if end < start:
        raise ConfigError(f"to ({req.end}) is before from ({req.start}); swap them")
    if req.every:
        if req.by:
            raise ConfigError("give every or by, not both")
        try:
            step = parse_duration(req.every, "every")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if step <= 0:
            raise ConfigError("every must be more than 0, e.g. 1h")
        if (end - start).total_seconds() / step >= MAX_TASKS:
            raise ConfigError(f"more than {MAX_TASKS} times; narrow from/to or use a larger every")
        times, t = [], start
        while t <= end:
            times.append(t)
            t += timedelta(seconds=step)
        return times
    by = _BY.get((req.by or "day").lower(), "")
    if not by:
        raise ConfigError(f"by={req.by!r}: write hour, day, week or month")
    if not req.by:
        notes.append("using default day iterator")
    if by == "hour" and (end - start).total_seconds() / 3600 >= MAX_TASKS:
        raise ConfigError(f"more than {MAX_TASKS} hours; narrow from/to")
    rule = dataclasses.replace(phase.rule, for_=end - start, by=by)
    return rule.batch_times(start)


def plan_backload(
    workflows: WorkflowSet, body: Mapping[str, object], now: datetime
) -> tuple[BackloadRequest, BackloadPlan]:
    """Check a backload request and make its tasks (nothing is sent).

    Raises:
        ConfigError: what is wrong with the request, in one line.
    """
    try:
        req = BackloadRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ConfigError(f"{where}: {first['msg']}") from err
    topic, job = split_key(req.task)
    job = req.job or job
    phase = workflows.phase(topic, job, req.workflow or None)
    if phase is None or (job and phase.job != job):
        name = f"{topic}:{job}" if job else topic
        raise ConfigError(f"no phase {name} in the workflows; GET /info lists them")
    notes = [f"phase found in {phase.workflow}"]
    times = _times(req, phase, now, notes)
    rows = _rows(req, phase)
    if len(times) * max(len(rows), 1) > MAX_TASKS:
        raise ConfigError(f"{len(times) * len(rows)} tasks; the limit is {MAX_TASKS}")
    try:
        tasks = make_tasks(phase, times, rows, created=now)
    except MissingMeta as err:
        raise ConfigError(f"{err}; give it in meta") from err
    return req, BackloadPlan(phase, tasks, notes)
