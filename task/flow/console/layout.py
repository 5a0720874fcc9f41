"""What every console page shares: the header with its links, the day picker, links to a
task's chain and to a filtered tasks list, times written the same way everywhere.

Every page reads a UTC day (``?day=2024-01-31``, today by default); every task id anywhere
links to its chain (``/console/task?id=...``: a query, so any id works, slashes and all).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlencode

from task.web.page import Markup, document, esc, join, tag

__all__ = [
    "BASE",
    "ConsoleError",
    "console_page",
    "day_picker",
    "error_page",
    "fmt_seconds",
    "fmt_time",
    "newest_page",
    "pager",
    "read_day",
    "read_page",
    "task_link",
    "tasks_url",
    "url",
    "void",
]

T = TypeVar("T")

#: where the console lives on the status port (the JSON API keeps its own paths)
BASE = "/console"
_NAV = (("tasks", "Tasks"), ("alerts", "Alerts"), ("files", "Files"), ("workflows", "Workflows"),
        ("backload", "Backload"), ("about", "About"))


class ConsoleError(Exception):
    """Bad input on a console page: answered 400 with this one line on an HTML page."""


def void(element: str, /, **attrs: object) -> Markup:
    """A void element (``<input ...>``): ``tag`` always writes a closing tag, which HTML
    does not allow for these. Attributes are escaped as ``tag`` does."""
    return Markup(tag(element, **attrs)[: -len(f"</{element}>")])


def url(page: str, /, **query: object) -> str:
    """``/console/<page>?query`` with the empty values left out."""
    kept = {k: str(v) for k, v in query.items() if v not in (None, "")}
    return f"{BASE}/{page}" + (f"?{urlencode(kept)}" if kept else "")


def tasks_url(day: date, /, **filters: object) -> str:
    """The tasks page of ``day`` with ``filters`` (type, job, result, running, page)."""
    return url("tasks", day=day.isoformat(), **filters)


def task_link(id: str, *, short: bool = False) -> Markup:
    """``id`` as a link to its chain; ``short`` shows its first 8 characters (the whole id
    is the link's title and is on the chain page)."""
    text = id[:8] + "…" if short and len(id) > 9 else id
    return tag("a", text, href=url("task", id=id), class_="task-id mono", title=id if text != id else None)


def fmt_time(at: float, *, with_day: bool = False) -> str:
    """Unix seconds as ``HH:MM:SS`` UTC (``YYYY-MM-DD HH:MM:SS`` with the day)."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_day else "%H:%M:%S")


def fmt_seconds(seconds: float | None) -> str:
    """A run time: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def read_day(query: Mapping[str, str], now: datetime) -> date:
    """The ``day`` of the query, today (UTC) when absent.

    Raises:
        ConsoleError: a day that is not a date.
    """
    text = query.get("day", "").strip()
    if not text:
        return now.astimezone(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise ConsoleError(f"day={text!r} is not a date: write it like 2024-01-31") from err


def day_picker(page: str, day: date, **keep: object) -> Markup:
    """Previous / next day links and a date field (plain GET form) for ``page``; ``keep``
    carries the page's filters along."""
    hidden = [void("input", type="hidden", name=k, value=v) for k, v in keep.items() if v not in (None, "")]
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    return tag(
        "form", tag("a", f"← {before.isoformat()}", href=url(page, day=before.isoformat(), **keep), id="day-prev"),
        tag("label", "day", void("input", type="date", name="day", value=day.isoformat(), id="day")),
        *hidden, tag("button", "Show", type="submit"),
        tag("a", f"{after.isoformat()} →", href=url(page, day=after.isoformat(), **keep), id="day-next"),
        method="get", action=f"{BASE}/{page}", class_="day-picker",
    )


def read_page(query: Mapping[str, str]) -> int:
    """The ``page`` of the query (from 1; 1 when absent).

    Raises:
        ConsoleError: not a whole number from 1.
    """
    text = query.get("page", "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise ConsoleError(f"page={text!r}: write a page number from 1")
    return int(text)


def newest_page(items: Sequence[T], page: int, size: int) -> tuple[list[T], int, int]:
    """Page ``page`` (from 1, past the end: the last) of ``items`` (oldest first) shown newest
    first, ``size`` a page: the page's items, its number and the number of pages."""
    pages = max(1, -(-len(items) // size))
    page = min(page, pages)
    end = len(items) - (page - 1) * size
    return list(reversed(items[max(0, end - size): end])), page, pages


def pager(link: Callable[[int], str], page: int, pages: int, total: int, noun: str) -> Markup:
    """``← newer · page 2 of 7 · 650 tasks · older →``, ``link(n)`` being page n's URL."""
    parts: list[Markup] = []
    if page > 1:
        parts.append(tag("a", "← newer", href=link(page - 1), id="page-prev"))
    parts.append(tag("span", f"page {page} of {pages} · {total} {noun}{'s' if total != 1 else ''}"))
    if page < pages:
        parts.append(tag("a", "older →", href=link(page + 1), id="page-next"))
    return tag("p", Markup(" ".join(parts)), class_="pager", id="pager")


def _nav(active: str) -> Markup:
    return tag("nav", *(
        tag("a", label, href=f"{BASE}/{page}", aria_current="page" if page == active else None,
            id=f"nav-{page}")
        for page, label in _NAV))


def console_page(title: str, active: str, *content: object, note: str = "") -> bytes:
    """A whole console page: the header (title, links), ``content``, a footer."""
    body = join([
        tag("header", tag("h1", tag("a", "taskbus flow", href=f"{BASE}/tasks"), " · ", title),
            _nav(active)),
        tag("main", *content),
        tag("footer", note or "All times UTC · JSON: /info, /task/{id}, /recap · /stats, /metrics"),
    ])
    return document(f"{title} · taskbus flow", body)


def error_page(message: str) -> bytes:
    """The page a bad request gets: the one line saying what to write."""
    return console_page("bad request", "", tag("p", esc(message), class_="problems", id="error"))
