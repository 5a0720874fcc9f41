"""The JSON API of ``taskbus flow``, on its status port beside ``/healthz``, ``/stats`` and
``/metrics``.

- ``GET /info``: the workflows, their phases (how each starts, its children, the next and
  previous cron times), the problems of files that did not load and warnings.
- ``GET /task/{id}``: the whole chain of an id (children and retries keep it), oldest first.
- ``GET /recap?day=2024-01-31``: per type:job, counts by result and run times (today by
  default).
- ``POST /backload``: a phase's tasks over a span (``task``, ``from``, ``to`` or ``at``,
  ``by`` or ``every``, ``meta``); a dry run listing them unless ``"execute": true``.
- ``POST /refresh`` (and ``GET``, as Go): reload the workflow files now.
- ``/`` and ``/console/...``: the web console (``task.flow.console``), HTML for people.

Bad input is a 400 with ``{"error": "..."}``; an unknown path a 404 naming the valid ones.
Built on aiohttp (the ``[apps]`` extra) like ``taskbus http``; binds 127.0.0.1 by default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any, Protocol

from aiohttp import web

from task.errors import BusError, ConfigError
from task.flow.backload import plan_backload
from task.flow.console import ConsoleRoutes, ConsoleView
from task.flow.workflow import Phase

__all__ = ["FlowApiServer", "FlowView"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PATHS = "GET /info, /task/{id}, /recap, /console, /healthz, /stats, /metrics; POST /backload, /refresh"


class FlowView(ConsoleView, Protocol):
    """What the API reads of the running flow app: what the console reads, and more."""

    def healthy(self) -> bool:
        """False when the app cannot do its work."""

    async def refresh(self) -> list[str]:
        """Reload the workflow files; the names of workflows changed."""


class _BadRequest(Exception):
    """A request answered with 400 and this message."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


class FlowApiServer:
    """Serves the API for ``view`` on ``host:port`` (0: the OS picks; ``port`` holds the real
    one once started). A lifecycle part: ``start``/``stop``."""

    def __init__(
        self,
        view: FlowView,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics: Callable[[], bytes] | None = None,
        max_body: int = 1 << 20,
    ) -> None:
        self.view = view
        self.host = host
        self.port = port
        self.metrics = metrics
        self.max_body = max_body
        self._runner: web.AppRunner | None = None
        self.console = ConsoleRoutes(view)

    def web_app(self) -> web.Application:
        """The aiohttp application, for embedding or testing."""
        app = web.Application(client_max_size=self.max_body, middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/info", self._info)
        app.router.add_get("/task/{id}", self._task)
        app.router.add_get("/recap", self._recap)
        app.router.add_post("/backload", self._backload)
        app.router.add_post("/refresh", self._refresh)
        app.router.add_get("/refresh", self._refresh)
        self.console.add_to(app)
        return app

    async def start(self) -> None:
        """Listen."""
        self._runner = web.AppRunner(self.web_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        logger.info("flow API on http://%s:%d/info, console on http://%s:%d/", self.host, self.port,
                    self.host, self.port)

    async def stop(self) -> None:
        """Stop listening; requests in flight finish. Idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BadRequest as err:
            return _error(400, str(err))
        except web.HTTPException as err:
            hint = f"; try {_PATHS}" if err.status in (404, 405) else ""
            return _error(err.status, f"{err.reason}{hint}")

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.view.healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unhealthy\n")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.stats(), dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return web.Response(status=404, text="/metrics needs prometheus-client: "
                                "pip install 'taskbus[metrics]'\n")
        return web.Response(body=self.metrics(), headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def _phase(self, phase: Phase, now: datetime) -> dict[str, object]:
        starts = ("cron" if phase.starts_on_cron else "files" if phase.starts_on_files
                  else "dependsOn" if phase.is_child else "manual")
        entry: dict[str, object] = {
            "task": phase.task, "topic": phase.topic, "job": phase.job,
            "dependsOn": phase.depends_on, "retry": phase.retry, "template": phase.template,
            "rule": phase.rule.text, "starts": starts,
            "children": [c.key for c in self.view.workflows.children(phase.topic, phase.job,
                                                                       phase.workflow)],
        }
        if phase.starts_on_cron:
            upcoming, previous = self.view.cron.times(phase, now)
            entry.update(cron=phase.rule.cron, timezone=phase.rule.timezone or "UTC",
                         next=_iso(upcoming), prev=_iso(previous))
        if phase.starts_on_files:
            entry["files"] = phase.rule.files
        return entry

    async def _info(self, request: web.Request) -> web.Response:
        now = self.view.now()
        workflows = self.view.workflows
        body = {
            "workflows": {
                name: {
                    "path": str(w.path),
                    "loaded_at": _iso(workflows.loaded_at(name)),
                    "phases": [self._phase(p, now) for p in w.phases],
                }
                for name, w in workflows.workflows().items()
            },
            "problems": workflows.problems,
            "warnings": workflows.warnings,
            "now": _iso(now),
        }
        return web.json_response(body, dumps=_dumps)

    async def _task(self, request: web.Request) -> web.Response:
        id = request.match_info["id"]
        chain = await self.view.store.chain(id)
        if not chain:
            return _error(404, f"no task {id!r} in the store")
        return web.json_response({"id": id, "events": [dataclasses.asdict(e) for e in chain]},
                                 dumps=_dumps)

    async def _recap(self, request: web.Request) -> web.Response:
        text = request.query.get("day", "")
        try:
            day = date.fromisoformat(text) if text else self.view.now().astimezone(UTC).date()
        except ValueError as err:
            raise _BadRequest(f"day={text!r}: write a date like 2024-01-31") from err
        rows = await self.view.store.recap(day)
        return web.json_response({"day": day.isoformat(),
                                  "recap": [dataclasses.asdict(r) for r in rows]}, dumps=_dumps)

    async def _backload(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise _BadRequest(f"body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise _BadRequest(f"a backload is a JSON object, got {type(body).__name__}")
        try:
            req, plan = plan_backload(self.view.workflows, body, self.view.now())
        except ConfigError as err:
            raise _BadRequest(str(err)) from err
        tasks = [json.loads(t.to_json()) for t in plan.tasks]
        status = ", ".join(plan.notes)
        if not req.execute:
            return web.json_response({"status": "DRY RUN ONLY: " + status, "count": len(tasks),
                                      "tasks": tasks})
        try:
            sent = await self.view.engine.send_new(plan.tasks)
        except BusError as err:
            return _error(503, f"the bus refused a task: {err}")
        return web.json_response({"status": "Executed: " + status, "count": sent,
                                  "tasks": tasks})

    async def _refresh(self, request: web.Request) -> web.Response:
        changed = await self.view.refresh()
        workflows = self.view.workflows
        return web.json_response({"changed": changed, "workflows": list(workflows.workflows()),
                                  "problems": workflows.problems})


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
