"""The files that reached flow on one day: each path, its size, the phases it matched and
the tasks it started (links to their chains); a file no phase matched says so."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from task.flow.console.layout import console_page, day_picker, fmt_time, read_day, task_link
from task.flow.store import TaskStore
from task.web.page import Markup, table, tag

__all__ = ["render_files"]


async def render_files(store: TaskStore, query: Mapping[str, str], now: datetime) -> bytes:
    """The files page of ``?day=``.

    Raises:
        ConsoleError: a bad day.
    """
    day = read_day(query, now)
    files = await store.files(day)
    rows = [
        (fmt_time(f.at), tag("span", f.path, class_="mono"), f.size,
         ", ".join(f.phases) if f.phases else tag("span", "no phase matched", class_="muted"),
         Markup(" ".join(task_link(id) for id in f.task_ids)) if f.task_ids else "—")
        for f in files
    ]
    return console_page(
        f"files of {day.isoformat()}", "files",
        day_picker("files", day),
        tag("section", tag("h2", f"{len(files)} file{'s' if len(files) != 1 else ''}"),
            table(["time", "path", "bytes", "phases", "tasks"], rows,
                  empty="No files reached flow on this day.", numeric=[2], id="files"),
            class_="panel"),
    )
