"""The console's routes on the flow app's aiohttp server (the status port, beside the JSON
API): ``/`` goes to today's tasks; ``/console/...`` are the pages; ``/style.css`` the
shared stylesheet.

Pages are HTML rendered on the server with no script at all, so the Content-Security-Policy
forbids scripts and framing (no clickjacking of the backload form) and lets forms post only
here. Bad input is a 400 page with one line saying what to write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Protocol

from aiohttp import web

from task.flow.console.about_page import render_about
from task.flow.console.alerts_page import render_alerts
from task.flow.console.backload_page import BackloadForms, same_origin
from task.flow.console.chain_page import render_chain
from task.flow.console.files_page import render_files
from task.flow.console.layout import BASE, ConsoleError, error_page
from task.flow.console.tasks_page import render_tasks
from task.flow.console.workflows_page import render_workflows
from task.flow.cron_phases import CronPhases
from task.flow.engine import FlowEngine
from task.flow.loader import WorkflowSet
from task.flow.store import TaskStore
from task.web.page import STYLESHEET_PATH, stylesheet

__all__ = ["ConsoleRoutes", "ConsoleView"]

logger = logging.getLogger(__name__)

#: no script anywhere; forms post here only; never shown in a frame
CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class ConsoleView(Protocol):
    """What the console reads of the running flow app."""

    @property
    def workflows(self) -> WorkflowSet: ...

    @property
    def cron(self) -> CronPhases: ...

    @property
    def engine(self) -> FlowEngine: ...

    @property
    def store(self) -> TaskStore: ...

    @property
    def startup(self) -> Mapping[str, object]:
        """The settings it started with (the start-up log line's)."""

    def now(self) -> datetime:
        """The app's clock."""

    def stats(self) -> Mapping[str, object]:
        """What ``/stats`` shows."""


def _html(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/html", charset="utf-8",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store",
                                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"})


class ConsoleRoutes:
    """The console pages for ``view``; ``add_to(app)`` mounts them."""

    def __init__(self, view: ConsoleView) -> None:
        self.view = view
        self.backload = BackloadForms()
        #: the last render time of each page, seconds (for the bench and the logs)
        self.render_times: dict[str, float] = {}

    def add_to(self, app: web.Application) -> None:
        """Mount the pages on ``app``."""
        add = app.router.add_get
        add("/", self._home)
        add(BASE, self._home)
        add(STYLESHEET_PATH, self._style)
        for page, handler in (("tasks", self._tasks), ("task", self._chain), ("alerts", self._alerts),
                              ("files", self._files), ("workflows", self._workflows),
                              ("about", self._about), ("backload", self._backload_form)):
            add(f"{BASE}/{page}", self._timed(page, handler))
        app.router.add_post(f"{BASE}/backload", self._timed("backload-post", self._backload_post))

    def _timed(self, page: str, render: Callable[[web.Request], Awaitable[web.Response]]
               ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            began = time.perf_counter()
            try:
                response = await render(request)
            except ConsoleError as err:
                response = _html(error_page(str(err)), 400)
            self.render_times[page] = time.perf_counter() - began
            logger.debug("console %s rendered in %.1f ms", page, self.render_times[page] * 1000)
            return response

        return handler

    async def _home(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"{BASE}/tasks"})

    async def _style(self, request: web.Request) -> web.Response:
        return web.Response(body=stylesheet(), content_type="text/css", charset="utf-8",
                            headers={"Cache-Control": "max-age=300"})

    async def _tasks(self, request: web.Request) -> web.Response:
        return _html(await render_tasks(self.view.store, request.query, self.view.now()))

    async def _chain(self, request: web.Request) -> web.Response:
        return _html(await render_chain(self.view.store, request.query))

    async def _alerts(self, request: web.Request) -> web.Response:
        return _html(await render_alerts(self.view.store, request.query, self.view.now()))

    async def _files(self, request: web.Request) -> web.Response:
        return _html(await render_files(self.view.store, request.query, self.view.now()))

    async def _workflows(self, request: web.Request) -> web.Response:
        return _html(await render_workflows(self.view.workflows, self.view.cron, self.view.store,
                                            self.view.now()))

    async def _about(self, request: web.Request) -> web.Response:
        return _html(await render_about(self.view.store, self.view.stats(), self.view.startup))

    async def _backload_form(self, request: web.Request) -> web.Response:
        return _html(self.backload.render_form(self.view.workflows))

    async def _backload_post(self, request: web.Request) -> web.Response:
        if not same_origin(request.headers, request.host):
            return _html(error_page("cross-site form refused: open the console's own backload page"), 403)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if form.get("action") == "execute":
            status, body = await self.backload.execute(self.view.engine, form)
            return _html(body, status)
        if not self.backload.check_token(form):
            return _html(error_page("the form's token is missing or stale (flow restarted?): "
                                    "reload the backload page and try again"), 403)
        status, body = self.backload.preview(self.view.workflows, form, self.view.now())
        return _html(body, status)
