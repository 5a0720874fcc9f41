"""The alerts of one day: the same per type:job summary the webhook sends (over the whole
day), then the alerts themselves, newest first, a page at a time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from task.flow.alert_summary import summarize
from task.flow.console.layout import (
    console_page,
    day_picker,
    fmt_time,
    newest_page,
    pager,
    read_day,
    read_page,
    task_link,
    tasks_url,
    url,
)
from task.flow.store import TaskStore
from task.web.page import table, tag

__all__ = ["PAGE_SIZE", "render_alerts"]

#: alerts per page
PAGE_SIZE = 200
_BADGE = {"error": "bad", "alert": "bad", "incomplete": "warn", "warn": "warn"}


async def render_alerts(store: TaskStore, query: Mapping[str, str], now: datetime) -> bytes:
    """The alerts page of ``?day=`` (and ``page``).

    Raises:
        ConsoleError: a bad day or page.
    """
    day = read_day(query, now)
    alerts = await store.alerts(day)
    newest, page, pages = newest_page(alerts, read_page(query), PAGE_SIZE)
    summary = [
        (tag("a", line.name, href=tasks_url(day, type=line.type, job=line.job)), line.count,
         line.kinds_text(), line.span_text())
        for line in summarize(alerts)
    ]
    rows = [
        (fmt_time(a.at), tag("span", a.kind.value, class_=f"badge {_BADGE.get(a.kind.value, 'warn')}"),
         f"{a.type}:{a.job}" if a.job else a.type, task_link(a.id, short=True),
         tag("span", a.msg, class_="msg"))
        for a in newest
    ]
    return console_page(
        f"alerts of {day.isoformat()}", "alerts",
        day_picker("alerts", day),
        tag("section", tag("h2", "per type:job"),
            table(["type:job", "alerts", "kinds", "when"], summary, empty="No alerts on this day.",
                  numeric=[1], id="alert-summary"), class_="panel"),
        tag("section", tag("h2", "alerts, newest first"),
            table(["time", "kind", "type:job", "task", "msg"], rows, empty="No alerts on this day.",
                  id="alerts"),
            pager(lambda n: url("alerts", day=day.isoformat(), page=n), page, pages, len(alerts), "alert"),
            class_="panel"),
    )
