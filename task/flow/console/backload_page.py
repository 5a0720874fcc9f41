"""The backload form: pick a phase and a span, preview the tasks (a dry run), then send
exactly those.

Usable without JavaScript: two plain POST forms. Both are CSRF-safe: a browser's
cross-site POST is refused by its ``Origin``/``Sec-Fetch-Site`` headers, and each form
carries a token a foreign page cannot read (the preview form the server's token; the
execute form a one-time token naming the previewed tasks). Executing sends the very tasks
the preview listed (same ids), once: sending the form again says it was done already, so a
reload or a double click never sends a backload twice.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit

from task.errors import BusError, ConfigError
from task.flow.backload import plan_backload
from task.flow.console.layout import ConsoleError, console_page, task_link, url, void
from task.flow.engine import FlowEngine
from task.flow.loader import WorkflowSet
from task.task import Task
from task.web.page import Markup, table, tag

__all__ = ["BackloadForms", "parse_meta", "same_origin"]

#: previews kept for executing (the oldest is forgotten first)
KEEP_PREVIEWS = 64
_BY = ("day", "hour", "week", "month")


def parse_meta(text: str) -> dict[str, str | list[str]]:
    """``key=a,b`` lines as backload meta (one task per position).

    Raises:
        ConsoleError: a line that is not ``key=value[,value...]``.
    """
    meta: dict[str, str | list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, eq, values = line.partition("=")
        if not eq or not key.strip():
            raise ConsoleError(f"meta line {line.strip()!r}: write key=value or key=a,b,c")
        items = [v.strip() for v in values.split(",")]
        meta[key.strip()] = items if len(items) > 1 else items[0]
    return meta


class BackloadForms:
    """The form, its preview and its execution, for one console (its token and previews)."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self._previews: OrderedDict[str, tuple[float, list[Task]]] = OrderedDict()

    # -- the form -----------------------------------------------------------------------------

    def _form(self, workflows: WorkflowSet, values: Mapping[str, str]) -> Markup:
        options = [
            tag("option", f"{p.key} ({p.workflow})", value=f"{p.workflow}|{p.key}",
                selected=values.get("phase") == f"{p.workflow}|{p.key}")
            for p in workflows.phases()
        ]

        def field(name: str, label: str, hint: str) -> Markup:
            return tag("label", label, void("input", name=name, id=f"backload-{name}",
                                            value=values.get(name, ""), placeholder=hint))

        return tag(
            "form",
            void("input", type="hidden", name="csrf", value=self.token),
            tag("label", "phase", tag("select", *options, name="phase", id="backload-phase")),
            field("from", "from", "2024-01-31, -3d, today"),
            field("to", "to", "2024-02-02 (empty: from)"),
            tag("label", "by", tag("select", *(tag("option", b, value=b, selected=values.get("by") == b)
                                               for b in _BY), name="by", id="backload-by")),
            field("every", "or every", "6h (instead of by)"),
            tag("label", "meta (key=a,b per line)",
                tag("textarea", values.get("meta", ""), name="meta", id="backload-meta", rows="2")),
            tag("button", "Preview (dry run)", type="submit", name="action", value="preview",
                id="backload-preview"),
            method="post", action=url("backload"), id="backload-form",
        )

    def render_form(self, workflows: WorkflowSet, values: Mapping[str, str] | None = None,
                    error: str = "") -> bytes:
        """The empty form (or ``values`` again with ``error`` above it)."""
        parts: list[Markup] = []
        if error:
            parts.append(tag("p", error, class_="problems", id="error"))
        parts.append(tag("section", tag("h2", "backload a phase"), self._form(workflows, values or {}),
                         tag("p", "Nothing is sent until you execute the preview.", class_="muted"),
                         class_="panel"))
        return console_page("backload", "backload", *parts)

    # -- posts --------------------------------------------------------------------------------

    def check_token(self, form: Mapping[str, str]) -> bool:
        """True when the form carries this console's token."""
        return hmac.compare_digest(form.get("csrf", ""), self.token)

    def _body(self, form: Mapping[str, str]) -> dict[str, object]:
        workflow, bar, key = form.get("phase", "").partition("|")
        if not bar or not key:
            raise ConsoleError("choose a phase")
        body: dict[str, object] = {"task": key, "workflow": workflow}
        for name in ("from", "to", "every"):
            if form.get(name, "").strip():
                body[name] = form[name].strip()
        if not form.get("every", "").strip():
            body["by"] = form.get("by", "day") or "day"
        meta = parse_meta(form.get("meta", ""))
        if meta:
            body["meta"] = meta
        return body

    def preview(self, workflows: WorkflowSet, form: Mapping[str, str], now: datetime) -> tuple[int, bytes]:
        """The dry run of ``form``: the tasks it would send and the execute button; or the
        form again with the one line saying what is wrong (400)."""
        values = {k: form.get(k, "") for k in ("phase", "from", "to", "by", "every", "meta")}
        try:
            _, plan = plan_backload(workflows, self._body(form), now)
        except (ConsoleError, ConfigError) as err:
            return 400, self.render_form(workflows, values, str(err))
        nonce = secrets.token_urlsafe(24)
        self._previews[nonce] = (time.monotonic(), plan.tasks)
        while len(self._previews) > KEEP_PREVIEWS:
            self._previews.popitem(last=False)
        rows = [(t.id, f"{t.type}:{t.job}" if t.job else t.type, tag("code", t.info), tag("code", t.meta))
                for t in plan.tasks]
        execute = tag(
            "form",
            void("input", type="hidden", name="plan", value=nonce),
            tag("button", f"Execute: send these {len(plan.tasks)} tasks", type="submit", name="action",
                value="execute", id="backload-execute"),
            method="post", action=url("backload"), id="execute-form",
        )
        return 200, console_page(
            "backload preview", "backload",
            tag("p", "DRY RUN ONLY: " + ", ".join(plan.notes), id="backload-status"),
            tag("section", tag("h2", f"{len(plan.tasks)} tasks would be sent"), execute,
                table(["id", "type:job", "info", "meta"], rows, empty="No tasks.", id="backload-tasks"),
                class_="panel"),
            tag("section", tag("h2", "change and preview again"), self._form(workflows, values),
                class_="panel"),
        )

    async def execute(self, engine: FlowEngine, form: Mapping[str, str]) -> tuple[int, bytes]:
        """Send the tasks of the preview ``form`` names, once."""
        entry = self._previews.pop(form.get("plan", ""), None)
        if entry is None:
            return 409, console_page("backload", "backload", tag(
                "p", "This preview was executed already (or is too old): nothing was sent again. ",
                tag("a", "New backload", href=url("backload")), class_="problems", id="error"))
        tasks = entry[1]
        try:
            sent = await engine.send_new(tasks)
        except BusError as err:
            return 503, console_page("backload", "backload", tag(
                "p", f"The bus refused a task: {err}. The tasks listed before it were sent; "
                "look at their chains before sending again.", class_="problems", id="error"),
                _sent_table(tasks))
        return 200, console_page(
            "backload sent", "backload",
            tag("p", f"Executed: sent {sent} task{'s' if sent != 1 else ''}.", id="backload-status"),
            _sent_table(tasks), tag("p", tag("a", "Another backload", href=url("backload"))))


def _sent_table(tasks: list[Task]) -> Markup:
    rows = [(task_link(t.id), f"{t.type}:{t.job}" if t.job else t.type, tag("code", t.info)) for t in tasks]
    return tag("section", table(["id", "type:job", "info"], rows, empty="No tasks.", id="backload-sent"),
               class_="panel")


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """False for a browser's cross-site request: ``Sec-Fetch-Site`` says so, or ``Origin``
    names another host than ``host`` (the request's ``Host``). The scheme is not compared:
    behind a TLS proxy the browser says https and flow sees http. Clients that send
    neither header (curl, scripts) pass; they carry no cookies a forged request could ride
    on anyway."""
    site = headers.get("Sec-Fetch-Site", "")
    if site and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin", "")
    return not origin or urlsplit(origin).netloc == host

