"""The files that reached flow on one day, newest first, a page at a time: each path, its
size, the phases it matched and the tasks it started (links to their chains); a file no
phase matched says so."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from task.flow.console.layout import (
    console_page,
    day_picker,
    fmt_time,
    newest_page,
    pager,
    read_day,
    read_page,
    task_link,
    url,
)
from task.flow.store import TaskStore
from task.web.page import Markup, table, tag

__all__ = ["PAGE_SIZE", "render_files"]

#: files per page
PAGE_SIZE = 200


async def render_files(store: TaskStore, query: Mapping[str, str], now: datetime) -> bytes:
    """The files page of ``?day=`` (and ``page``).

    Raises:
        ConsoleError: a bad day or page.
    """
    day = read_day(query, now)
    files = await store.files(day)
    newest, page, pages = newest_page(files, read_page(query), PAGE_SIZE)
    rows = [
        (fmt_time(f.at), tag("span", f.path, class_="mono"), f.size,
         ", ".join(f.phases) if f.phases else tag("span", "no phase matched", class_="muted"),
         Markup(" ".join(task_link(id, short=True) for id in f.task_ids)) if f.task_ids else "—")
        for f in newest
    ]
    return console_page(
        f"files of {day.isoformat()}", "files",
        day_picker("files", day),
        tag("section", tag("h2", "files, newest first"),
            table(["time", "path", "bytes", "phases", "tasks"], rows,
                  empty="No files reached flow on this day.", numeric=[2], id="files"),
            pager(lambda n: url("files", day=day.isoformat(), page=n), page, pages, len(files), "file"),
            class_="panel"),
    )
