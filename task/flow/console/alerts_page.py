"""The alerts of one day: the same per type:job summary the webhook sends, then every
alert in time order with its kind, task and message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from task.flow.alert_summary import summarize
from task.flow.console.layout import (
    console_page,
    day_picker,
    fmt_time,
    read_day,
    task_link,
    tasks_url,
)
from task.flow.store import TaskStore
from task.web.page import table, tag

__all__ = ["render_alerts"]

_BADGE = {"error": "bad", "alert": "bad", "incomplete": "warn", "warn": "warn"}


async def render_alerts(store: TaskStore, query: Mapping[str, str], now: datetime) -> bytes:
    """The alerts page of ``?day=``.

    Raises:
        ConsoleError: a bad day.
    """
    day = read_day(query, now)
    alerts = await store.alerts(day)
    summary = [
        (tag("a", line.name, href=tasks_url(day, type=line.type, job=line.job)), line.count,
         line.kinds_text(), line.span_text())
        for line in summarize(alerts)
    ]
    rows = [
        (fmt_time(a.at), tag("span", a.kind.value, class_=f"badge {_BADGE.get(a.kind.value, 'warn')}"),
         f"{a.type}:{a.job}" if a.job else a.type, task_link(a.id), tag("span", a.msg, class_="msg"))
        for a in alerts
    ]
    return console_page(
        f"alerts of {day.isoformat()}", "alerts",
        day_picker("alerts", day),
        tag("section", tag("h2", "per type:job"),
            table(["type:job", "alerts", "kinds", "when"], summary, empty="No alerts on this day.",
                  numeric=[1], id="alert-summary"), class_="panel"),
        tag("section", tag("h2", f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''}"),
            table(["time", "kind", "type:job", "task", "msg"], rows, empty="No alerts on this day.",
                  id="alerts"), class_="panel"),
    )
