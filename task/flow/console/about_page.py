"""About this flow: its version, how long it has run, what its task store holds and for how
long, and the settings it started with (URLs without their credentials, as logged)."""

from __future__ import annotations

from collections.abc import Mapping

from task import __version__
from task.duration import format_duration
from task.flow.console.layout import console_page, url
from task.flow.store import TaskStore
from task.url import redact_url
from task.web.page import kv_table, tag

__all__ = ["render_about"]


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


async def render_about(store: TaskStore, stats: Mapping[str, object],
                       startup: Mapping[str, object]) -> bytes:
    """The about page from the app's ``stats`` and ``startup`` settings."""
    about = await store.about()
    runtime = stats.get("runtime")
    uptime = format_duration(float(runtime)) if isinstance(runtime, int | float) else "—"
    oldest = about["oldest_day"]
    facts = [
        ("version", f"taskbus {__version__}"),
        ("uptime", uptime),
        ("store", f"{about['backend']} · {about['rows']} task events · "
                  + (_bytes(about["bytes"]) if about["bytes"] else "size unknown")),
        ("oldest day kept", tag("a", oldest, href=url("tasks", day=oldest)) if oldest else "—"),
        ("retention", str(startup.get("retention", "—"))),
        ("workflows loaded", str(stats.get("workflows", "—"))),
        ("alerts raised", str(stats.get("alerts", 0))),
    ]
    if "webhook_summaries" in stats:
        facts.append(("webhook", (f"{stats['webhook_summaries']} summaries sent, "
                                 f"{stats.get('webhook_errors', 0)} failed, "
                                 f"{stats.get('webhook_pending', 0)} alerts pending")))
    settings = [(k, "—" if v is None else redact_url(v) if isinstance(v, str) and ":" in v else str(v))
                for k, v in startup.items()]
    return console_page(
        "about", "about",
        tag("section", tag("h2", "this flow"), kv_table(facts, id="about"), class_="panel"),
        tag("section", tag("h2", "started with"), kv_table(settings, id="settings"), class_="panel"),
    )
