"""One task's chain: every task sharing its id (the first task, its retries, the children
it started, theirs), each with its events in time order, times and messages in full.

Go's flow gives children and retries their parent's id, so the id is the chain: the page
groups its events by task (type:job) in the order the tasks appeared, says how each started
(by a phase, or as a child of which parent) and links each to its day's tasks.
"""

from __future__ import annotations

from collections.abc import Mapping

from task.flow.console.layout import (
    ConsoleError,
    console_page,
    fmt_seconds,
    fmt_time,
    tasks_url,
    url,
)
from task.flow.console.tasks_page import result_badge
from task.flow.store import Event, TaskEvent, TaskStore, day_of
from task.flow.store_fold import run_time
from task.web.page import Markup, kv_table, table, tag

__all__ = ["render_chain"]


def _name(event: TaskEvent) -> str:
    return f"{event.type}:{event.job}" if event.job else event.type


def _how(first: TaskEvent) -> Markup:
    if first.event is Event.CHILD and first.parent:
        return tag("span", "started as a child of ", tag("code", first.parent))
    if first.event is Event.CREATED:
        return tag("span", "created by its phase")
    return tag("span", f"first seen as {first.event.value}")


def _task_section(index: int, events: list[TaskEvent]) -> Markup:
    first, last = events[0], events[-1]
    dones = [e for e in events if e.event is Event.DONE]
    running = last.event is not Event.DONE
    state = result_badge(dones[-1].result if dones else "", running)
    rows = [
        (fmt_time(e.at, with_day=True), e.event.value, e.attempt or "", result_badge(e.result)
         if e.event is Event.DONE else "", e.started, e.ended,
         fmt_seconds(run_time(e.started, e.ended)) if e.event is Event.DONE else "",
         tag("span", e.msg, class_="msg"))
        for e in events
    ]
    details = kv_table([("info", tag("code", last.info)), ("meta", tag("code", last.meta)),
                        ("workflow", last.workflow), ("created", first.created or "—")])
    day = day_of(first.at)
    return tag(
        "section",
        tag("h3", tag("code", _name(first)), " ", state),
        tag("p", _how(first), " · ",
            tag("a", f"tasks of {day.isoformat()}", href=tasks_url(day, type=first.type, job=first.job))),
        table(["seen", "event", "retry", "result", "started", "ended", "run time", "msg"], rows,
              empty="No events.", id=f"events-{index}"),
        details, class_="panel chain-task", id=f"task-{index}",
    )


async def render_chain(store: TaskStore, query: Mapping[str, str]) -> bytes:
    """The chain page of ``?id=``.

    Raises:
        ConsoleError: no id given.
    """
    id = query.get("id", "")
    if not id:
        raise ConsoleError("give the task's id: /console/task?id=...")
    chain = await store.chain(id)
    if not chain:
        return console_page("task not found", "tasks", tag(
            "p", f"No task {id!r} in the store: it may be older than the retention, or the id "
            "is mistyped. ", tag("a", "Today's tasks", href=url("tasks")), class_="empty", id="not-found"))
    groups: dict[tuple[str, str], list[TaskEvent]] = {}
    for event in chain:
        groups.setdefault((event.type, event.job), []).append(event)
    summary = tag("p", tag("code", id, id="chain-id"), f" · {len(groups)} task"
                  f"{'s' if len(groups) != 1 else ''} · {len(chain)} events from "
                  f"{fmt_time(chain[0].at, with_day=True)} to {fmt_time(chain[-1].at, with_day=True)}")
    return console_page(f"task {id}", "tasks", summary,
                        *(_task_section(i, events) for i, events in enumerate(groups.values())))
