"""The tasks a phase makes, with the ids and meta Go's flowlord gives them.

Go workers and tools read these tasks, so the meta is the Go taskmaster's: ``workflow=`` (the
workflow file's name) on every task, ``cron=`` (the task's time, ``2006-01-02T15``) on cron,
batch and child tasks, ``job=`` when the phase has a job, ``file=``/``filename=`` on tasks a
file started, and the ``{meta:key}`` keys of a batch row. Children keep their parent's id;
cron tasks get an id derived from the phase and the tick (a UUID as Go's, but the same in
every replica, so a replica a second late makes the same task).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from task import rfc3339
from task.flow.rule import read_meta_file
from task.flow.template import meta_keys, render
from task.flow.workflow import Phase
from task.meta import encode_query, query_unescape
from task.task import Task
from task.timetemplate import extract_time

__all__ = [
    "GO_HOUR",
    "batch_rows",
    "child_tasks",
    "cron_task_id",
    "cron_tasks",
    "make_tasks",
    "task_time",
]

#: Go's ``DateHour`` layout of the ``cron=`` meta
GO_HOUR = "%Y-%m-%dT%H"
#: Namespace of cron task ids: uuid5(FLOW_NAMESPACE, "<workflow>/<phase>@<tick>#<n>").
FLOW_NAMESPACE = uuid.UUID("3b0e7a52-8f4d-5c1e-a6d9-2e41f08c7b35")


def batch_rows(phase: Phase) -> list[dict[str, str]]:
    """One meta mapping per task of a batch (``meta=`` or ``meta-file=``); ``[{}]`` for a
    phase that makes one task per time.

    Raises:
        ConfigError: the meta-file cannot be read or is not JSON lines.
    """
    if phase.rule.meta:
        return phase.rule.meta_rows()
    if phase.rule.meta_file:
        return read_meta_file(Path(phase.rule.meta_file))
    return [{}]


def task_time(task: Task, default: datetime) -> datetime:
    """The time a task is for (Go's ``tmpl.TaskTime``): its ``cron=`` meta, else a time its
    info names, else ``default``."""
    try:
        return datetime.strptime(task.get_meta("cron"), GO_HOUR).replace(tzinfo=UTC)
    except ValueError:
        return extract_time(task.info) or default


def _meta(pairs: Sequence[tuple[str, str]], *, sort: bool) -> str:
    if sort:
        encoded = encode_query({k: [v] for k, v in pairs})
        return query_unescape(encoded) or encoded
    return "&".join(f"{k}={v}" for k, v in pairs)


def make_tasks(
    phase: Phase,
    times: Sequence[datetime],
    rows: Sequence[Mapping[str, str]] = ({},),
    *,
    meta: Mapping[str, Sequence[str]] | None = None,
    id: str | None = None,
    created: datetime | None = None,
) -> list[Task]:
    """The tasks of ``phase`` for each of ``times`` and each row of a batch (Go's
    ``Batch.Range``): info from the template with the time and ``meta`` plus the row; meta
    ``cron``, ``job``, ``workflow`` and the row keys the template uses, sorted as Go encodes
    them. ``id`` (default: a new UUID each) is given to every task.

    Raises:
        MissingMeta: the template names a ``{meta:key}`` neither ``meta`` nor the row has.
    """
    tasks = []
    used = meta_keys(phase.template)
    for at in times:
        for row in rows or ({},):
            values: dict[str, Sequence[str]] = dict(meta or {})
            values.update({k: [v] for k, v in row.items()})
            info = render(phase.template, at, values)
            pairs = [("cron", at.strftime(GO_HOUR)), ("workflow", phase.workflow)]
            if phase.job:
                pairs.append(("job", phase.job))
            pairs.extend((k, row[k]) for k in used if k in row)
            task = Task.new(phase.topic, info, id=id, job=phase.job or None,
                            meta=_meta(pairs, sort=True))
            if created is not None:
                task.created = rfc3339.format_utc(created)
            tasks.append(task)
    return tasks


def cron_task_id(phase: Phase, tick: datetime, n: int = 0) -> str:
    """The id of task ``n`` of ``phase``'s cron tick ``tick``: the same in every replica."""
    return str(uuid.uuid5(FLOW_NAMESPACE,
                          f"{phase.workflow}/{phase.key}@{rfc3339.format_utc(tick)}#{n}"))


def cron_tasks(phase: Phase, tick: datetime, now: datetime) -> list[Task]:
    """The tasks a cron phase makes at ``tick``: one at ``tick + offset`` (in the cron's
    zone), or a batch over ``for``/``by`` and the rows of ``meta``/``meta-file``.

    A single task's meta is Go's ``Cronjob``'s: ``workflow``, ``cron``, ``job`` in that
    order; a batch's is ``Batch.Range``'s (sorted).

    Raises:
        MissingMeta: the template names a key no row has.
        ConfigError: the meta-file cannot be read.
    """
    at = phase.rule.task_time(tick.astimezone(phase.rule.tz))
    if not phase.rule.is_batch:
        info = render(phase.template, at, {})
        pairs = [("workflow", phase.workflow), ("cron", at.strftime(GO_HOUR))]
        if phase.job:
            pairs.append(("job", phase.job))
        task = Task.new(phase.topic, info, id=cron_task_id(phase, tick), job=phase.job or None,
                        meta=_meta(pairs, sort=False))
        task.created = rfc3339.format_utc(now)
        return [task]
    tasks = make_tasks(phase, phase.rule.batch_times(at), batch_rows(phase), created=now)
    for n, task in enumerate(tasks):
        task.id = cron_task_id(phase, tick, n)
    return tasks


def child_tasks(phase: Phase, parent: Task, now: datetime) -> list[Task]:
    """The tasks child ``phase`` makes when ``parent`` completes (Go's ``Process``): the
    parent's id, info from the template at the parent's task time with the parent's meta (and
    each row of a ``meta=`` batch), meta ``workflow``, ``cron`` (when the parent has one) and
    ``job``.

    Raises:
        MissingMeta: the template names a ``{meta:key}`` the parent's meta lacks.
        ConfigError: the meta-file cannot be read.
    """
    at = task_time(parent, now)
    parent_meta = parent.meta_values()
    rows = batch_rows(phase)
    tasks = make_tasks(phase, [at], rows, meta=parent_meta, id=parent.id, created=now)
    pairs = [("workflow", parent.get_meta("workflow"))]
    if cron := parent.get_meta("cron"):
        pairs.append(("cron", cron))
    if phase.job:
        pairs.append(("job", phase.job))
    for task in tasks:
        task.meta = _meta(pairs, sort=False)
    return tasks
