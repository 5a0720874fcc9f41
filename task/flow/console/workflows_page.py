"""Each loaded workflow drawn as a graph of its phases (SVG, laid out on the server), with
today's counts on each phase, then its phases in a table: how each starts, its rule and
template, the next and previous cron times. Files that did not load are listed first: they
are what needs a human."""

from __future__ import annotations

from datetime import UTC, date, datetime

from task.flow.console.graph import render_graph
from task.flow.console.layout import console_page, fmt_time, tasks_url
from task.flow.cron_phases import CronPhases
from task.flow.loader import WorkflowSet
from task.flow.store import RecapRow, TaskStore
from task.flow.workflow import Phase
from task.web.page import Markup, table, tag

__all__ = ["render_workflows"]


def _counts(rows: list[RecapRow]) -> dict[str, str]:
    counts: dict[str, str] = {}
    for r in rows:
        parts = [f"{n} {name}" for name, n in (("complete", r.complete), ("error", r.error),
                                              ("alert", r.alert), ("running", r.running)) if n]
        counts[f"{r.type}:{r.job}" if r.job else r.type] = " · ".join(parts) or f"{r.tasks} tasks"
    return counts


def _starts(phase: Phase) -> str:
    if phase.starts_on_cron:
        return "cron"
    if phase.starts_on_files:
        return "files"
    return "dependsOn" if phase.is_child else "backload only"


def _when(at: datetime | None) -> str:
    return "—" if at is None else fmt_time(at.timestamp(), with_day=True)


async def render_workflows(workflows: WorkflowSet, cron: CronPhases, store: TaskStore,
                           now: datetime) -> bytes:
    """The workflows page at ``now``."""
    today: date = now.astimezone(UTC).date()
    counts = _counts(await store.recap(today))
    sections: list[Markup] = []
    if workflows.problems or workflows.warnings:
        sections.append(tag("section", tag("h2", "problems"), tag("ul", *(
            tag("li", line) for line in [*workflows.problems, *workflows.warnings]),
            class_="problems"), class_="panel", id="problems"))
    for name, workflow in workflows.workflows().items():
        rows = []
        for phase in workflow.phases:
            upcoming, previous = cron.times(phase, now) if phase.starts_on_cron else (None, None)
            rows.append((tag("a", phase.key, href=tasks_url(today, type=phase.topic, job=phase.job)),
                         _starts(phase), tag("code", phase.rule.text), tag("code", phase.template),
                         phase.retry, _when(upcoming), _when(previous)))
        loaded = workflows.loaded_at(name)
        sections.append(tag(
            "section", tag("h3", tag("code", name)),
            tag("p", f"{workflow.path} · loaded {_when(loaded)}", class_="muted"),
            render_graph(workflow, lambda p: tasks_url(today, type=p.topic, job=p.job), counts),
            table(["phase", "starts", "rule", "template", "retry", "next", "previous"], rows,
                  empty="No phases.", numeric=[4]),
            class_="panel workflow", id=f"workflow-{name}"))
    if not workflows.workflows():
        sections.append(tag("p", f"No workflow loaded from {workflows.path}.", class_="empty"))
    return console_page("workflows", "workflows", *sections)
