"""The status page a worker serves on ``GET /`` of its status port.

What the person on call needs first, in that order: is it healthy (and if not, why, in the
words ``/healthz`` uses), what is it doing now (the tasks in flight, for how long), how much
waits for it (the backlog), then the counts. Rendered on the server from ``stats()``, the
same numbers as ``/stats``; it reloads itself, so it works without JavaScript. Any app's
stats render: sections an app has no data for are left out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from task import rfc3339
from task.duration import format_duration
from task.health import IN_FLIGHT_KEY, Verdict
from task.web.page import Markup, document, kv_table, table, tag

__all__ = ["REFRESH_SECONDS", "render_status_page"]

#: seconds between reloads of the page
REFRESH_SECONDS = 5
#: stats shown in their own sections, not in the counts table
_OWN_SECTIONS = {IN_FLIGHT_KEY, "health", "backlog", "results", "consumer", "producer", "ledger"}


def render_status_page(
    app: str, stats: Mapping[str, object], verdict: Verdict, *, now: float | None = None,
    refresh: int = REFRESH_SECONDS,
) -> bytes:
    """The page of ``app`` from its ``stats`` and the probes' ``verdict`` at ``now``."""
    now = time.time() if now is None else now
    kind = str(stats.get("task_type") or "")
    title = f"taskbus {app}" + (f" · {kind}" if kind else "")
    parts = [
        tag("header", tag("h1", title), _badge(verdict), tag("nav", *_links())),
        tag("main", _health(verdict, "ledger" in stats), _cards(stats), *_sections(stats, now)),
        tag("footer", f"Reloads every {refresh}s · rendered {rfc3339.format_utc(datetime.fromtimestamp(now, UTC))} · "
                      "the same numbers as /stats"),
    ]
    return document(title, Markup("".join(parts)), refresh=refresh)


def _links() -> list[Markup]:
    return [tag("a", path, href=path) for path in ("/stats", "/metrics", "/healthz", "/readyz")]


def _badge(verdict: Verdict) -> Markup:
    if verdict.problems:
        return tag("span", "UNHEALTHY", class_="badge bad", id="health-badge")
    if not verdict.started:
        return tag("span", "STARTING", class_="badge warn", id="health-badge")
    return tag("span", "HEALTHY", class_="badge ok", id="health-badge")


def _health(verdict: Verdict, has_ledger: bool) -> Markup:
    if verdict.problems:
        lines = tag("ul", *(tag("li", problem) for problem in verdict.problems), class_="problems")
        why = tag("p", "/healthz answers 503 (a liveness probe restarts the worker), because:")
        return tag("section", tag("h2", "Health"), why, lines, class_="panel", id="health")
    if not verdict.started:
        text = "Starting: the bus consumer has not subscribed yet (/readyz answers 503, /healthz 200)."
    else:
        text = "Healthy and ready: the bus connection is up" + (
            " and the ledger takes writes." if has_ledger else ".")
    return tag("section", tag("h2", "Health"), tag("p", text), class_="panel", id="health")


def _cards(stats: Mapping[str, object]) -> Markup:
    backlog = stats.get("backlog")
    waiting = backlog.get("waiting") if isinstance(backlog, Mapping) else None
    results = stats.get("results")
    errors = results.get("error", 0) if isinstance(results, Mapping) else None
    runtime = stats.get("runtime_s")
    cards: list[tuple[str, object]] = [
        ("running", stats.get("tasks_running")),
        ("finished", stats.get("tasks_finished")),
        ("errors", errors),
        ("up for", format_duration(float(runtime)) if isinstance(runtime, int | float) else None),
    ]
    if "backlog" in stats:  # unknown until read: a dash, not a missing card
        cards.insert(1, ("waiting", "-" if waiting is None else waiting))
    shown = [
        tag("div", tag("div", value, class_="value"), tag("div", label, class_="label"),
            class_="card", id=f"card-{label.replace(' ', '-')}")
        for label, value in cards
        if value is not None
    ]
    return tag("section", *shown, class_="cards") if shown else Markup("")


def _sections(stats: Mapping[str, object], now: float) -> list[Markup]:
    sections: list[Markup] = []
    running = stats.get(IN_FLIGHT_KEY)
    if isinstance(running, list):
        sections.append(_section("In flight", _in_flight(running, stats, now), "in-flight"))
    if "backlog" in stats:
        sections.append(_section("Backlog", _backlog(stats.get("backlog")), "backlog"))
    results = stats.get("results")
    if isinstance(results, Mapping) and results:
        sections.append(_section("Results", kv_table(sorted(results.items())), "results"))
    counts = [(k, _plain(v)) for k, v in stats.items() if k not in _OWN_SECTIONS]
    sections.append(_section("Counts", kv_table(counts), "counts"))
    for part in ("consumer", "producer", "ledger"):
        info = stats.get(part)
        if isinstance(info, Mapping):
            sections.append(_section(part.capitalize(), kv_table([(k, _plain(v)) for k, v in info.items()]), part))
    return sections


def _section(title: str, body: Markup, id: str) -> Markup:
    return tag("section", tag("h2", title), body, class_="panel", id=id)


def _in_flight(rows: list[object], stats: Mapping[str, object], now: float) -> Markup:
    tasks = [row for row in rows if isinstance(row, Mapping)]
    tasks.sort(key=lambda row: str(row.get("started") or ""))  # oldest first: the stuck ones on top
    shown = [
        (row.get("id") or "(no id)", row.get("type"), row.get("job") or "", row.get("started") or "",
         _running_for(row.get("started"), now))
        for row in tasks
    ]
    running = stats.get("tasks_running")
    empty = "No task is running." if not running else f"{running} running (not listed)."
    note = ""
    if isinstance(running, int) and running > len(shown) > 0:
        note = f"The {len(shown)} oldest of {running} running tasks."
    listing = table(["id", "type", "job", "started", "running for"], shown, empty=empty, numeric=[4])
    return Markup(listing + (tag("p", note, class_="muted") if note else ""))


def _backlog(backlog: object) -> Markup:
    if backlog is None:
        return tag("p", "Not read yet: the bus is asked when the page is looked at.", class_="empty")
    if not isinstance(backlog, Mapping):
        return tag("p", str(backlog))
    if backlog.get("error"):
        return tag("p", str(backlog["error"]), class_="problems")
    age = backlog.get("oldest_age_seconds")
    pairs: list[tuple[str, object]] = [
        ("topic", backlog.get("topic")),
        ("channel", backlog.get("channel")),
        ("waiting", _count(backlog.get("waiting"))),
        ("in flight (bus)", _count(backlog.get("in_flight"))),
        ("redelivered", _count(backlog.get("redelivered"))),
        ("delayed (ledger)", _count(backlog.get("delayed"))),
        ("oldest waiting", format_duration(float(age)) if isinstance(age, int | float) else "unknown"),
        ("read", f"{backlog.get('age_s', 0)}s ago"),
    ]
    notes = backlog.get("notes")
    listed = tag("ul", *(tag("li", n) for n in notes), class_="muted") if isinstance(notes, list) and notes else ""
    return Markup(kv_table(pairs) + listed)


def _count(value: object) -> object:
    return "unknown" if value is None else value


def _running_for(started: object, now: float) -> str:
    moment = rfc3339.parse(started) if isinstance(started, str) and started else None
    if moment is None:
        return ""
    return format_duration(max(0, int(now - moment.timestamp())))  # starts are whole seconds


def _plain(value: object) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "-"
    return "-" if value is None else str(value)

