"""The tasks of one day: the recap per type:job on top (each count a link to those tasks),
a filter form (type, job, result, running) and the tasks, newest first, a page at a time.

Every read is one index range of the store (``tasks``/``count_tasks``/``recap``), so the
page costs the same on a quiet day and on one of 100,000 tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from task.flow.console.layout import (
    ConsoleError,
    console_page,
    day_picker,
    fmt_seconds,
    fmt_time,
    pager,
    read_day,
    read_page,
    task_link,
    tasks_url,
    url,
    void,
)
from task.flow.store import RESULTS, RecapRow, TaskRow, TaskStore
from task.web.page import Markup, table, tag

__all__ = ["PAGE_SIZE", "render_tasks"]

#: tasks per page
PAGE_SIZE = 100
#: characters of a message shown in the list (the chain shows all of it)
MSG_WIDTH = 160
_RUNNING = {"": None, "yes": True, "no": False}
_BADGE = {"complete": "ok", "warn": "warn", "error": "bad", "alert": "bad"}


def result_badge(result: str, running: bool = False) -> Markup:
    """A task's state as a word in a badge (the colour only repeats the word)."""
    if running:
        return tag("span", "running", class_="badge warn")
    if not result:
        return tag("span", "—", class_="muted")
    return tag("span", result, class_=f"badge {_BADGE.get(result, 'warn')}")


def _filters(query: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """The filters as written and the page number.

    Raises:
        ConsoleError: an unknown result or running value, or a bad page.
    """
    kept = {k: query.get(k, "").strip() for k in ("type", "job", "result", "running")}
    if kept["result"] not in ("", "none", *RESULTS):
        raise ConsoleError(f"result={kept['result']!r}: write one of {', '.join(RESULTS)} or none")
    if kept["running"] not in _RUNNING:
        raise ConsoleError(f"running={kept['running']!r}: write yes or no")
    return kept, read_page(query)


def _recap(rows: list[RecapRow], day: date) -> Markup:
    def line(r: RecapRow) -> tuple[object, ...]:
        # one URL per row, the counts' links add a filter to it (urlencode is most of the
        # page's time otherwise: 100 rows x 7 links)
        base = tasks_url(day, type=r.type, job=r.job or None)

        def count(n: int, extra: str = "") -> Markup | int:
            return tag("a", str(n), href=base + extra) if n else 0

        return (tag("a", f"{r.type}:{r.job}" if r.job else r.type, href=base),
                count(r.tasks), count(r.complete, "&result=complete"), count(r.error, "&result=error"),
                count(r.alert, "&result=alert"), count(r.warn, "&result=warn"),
                count(r.running, "&running=yes"), fmt_seconds(r.min_run), fmt_seconds(r.avg_run),
                fmt_seconds(r.max_run), fmt_time(r.first), fmt_time(r.last))

    return table(["type:job", "tasks", "complete", "error", "alert", "warn", "running", "min",
                  "avg", "max", "first", "last"], [line(r) for r in rows], empty="No tasks on this day.",
                 numeric=range(1, 10), id="recap")


def _select(name: str, options: list[tuple[str, str]], chosen: str) -> Markup:
    return tag("label", name, tag("select", *(
        tag("option", label, value=value, selected=value == chosen) for value, label in options),
        name=name, id=f"filter-{name}"))


def _form(day: date, recap: list[RecapRow], kept: dict[str, str]) -> Markup:
    types = sorted({r.type for r in recap} | ({kept["type"]} if kept["type"] else set()))
    jobs = sorted({r.job for r in recap if r.job and (not kept["type"] or r.type == kept["type"])}
                  | ({kept["job"]} if kept["job"] else set()))
    return tag(
        "form",
        void("input", type="hidden", name="day", value=str(day)),
        _select("type", [("", "any"), *((t, t) for t in types)], kept["type"]),
        _select("job", [("", "any"), *((j, j) for j in jobs)], kept["job"]),
        _select("result", [("", "any"), *((r, r) for r in RESULTS), ("none", "not done yet")],
                kept["result"]),
        _select("running", [("", "any"), ("yes", "running"), ("no", "finished")], kept["running"]),
        tag("button", "Filter", type="submit", id="filter-submit"),
        tag("a", "clear", href=tasks_url(day)),
        method="get", action=url("tasks"), id="filters",
    )


def _row(t: TaskRow) -> tuple[object, ...]:
    msg = t.msg if len(t.msg) <= MSG_WIDTH else t.msg[: MSG_WIDTH - 1] + "…"
    return (task_link(t.id, short=True), t.name, result_badge(t.result, t.running), t.attempts,
            fmt_time(t.first), fmt_seconds(t.run_time), tag("span", msg, class_="msg"),
            tag("span", t.info, class_="mono"))


async def render_tasks(store: TaskStore, query: Mapping[str, str], now: datetime) -> bytes:
    """The tasks page for ``query`` (day, type, job, result, running, page).

    Raises:
        ConsoleError: bad input, one line.
    """
    day = read_day(query, now)
    kept, page = _filters(query)
    type, job = kept["type"] or None, kept["job"] or None
    result = "" if kept["result"] == "none" else (kept["result"] or None)
    running = _RUNNING[kept["running"]]
    recap = await store.recap(day)
    total = await store.count_tasks(day, type=type, job=job, result=result, running=running)
    pages = max(1, -(-total // PAGE_SIZE))
    rows = await store.tasks(day, type=type, job=job, result=result, running=running,
                             limit=PAGE_SIZE, offset=(min(page, pages) - 1) * PAGE_SIZE)
    title = f"tasks of {day.isoformat()}"
    return console_page(
        title, "tasks",
        day_picker("tasks", day, **kept),
        tag("section", tag("h2", "per type:job"), _recap(recap, day), class_="panel"),
        tag("section", tag("h2", "tasks"), _form(day, recap, kept),
            table(["id", "type:job", "result", "tries", "first seen", "run time", "msg", "info"],
                  [_row(t) for t in rows], empty="No task matches these filters.", numeric=[3],
                  id="tasks"),
            pager(lambda n: tasks_url(day, **kept, page=n), min(page, pages), pages, total, "task"),
            class_="panel"),
    )
