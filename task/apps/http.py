"""``taskbus http``: create tasks from HTTP requests.

``POST /task`` takes one task object or a list (``type`` required; ``info``, ``id``, ``job``,
``meta`` as a query string or an object, ``topic``); ``POST /batch`` takes the batch app's
fields (``type``, ``template``, ``from``, ``to``, ``every`` or ``daily``, ``timezone``,
``topic``, ``job``, ``meta``, ``dry_run``). ``GET /healthz`` and ``GET /stats`` as every app.

Built on aiohttp (the ``[apps]`` extra): request size limits, keep-alive and chunked bodies
are its job, not ours. Binds 127.0.0.1 unless told otherwise. With a ``token`` every request
but ``/healthz`` needs ``Authorization: Bearer <token>``. Input is checked whole before any
task is sent; a bad request gets a 4xx with ``{"error": "<what is wrong>"}``.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from task.apps.batch import make_plan
from task.apps.lifecycle import Lifecycle, LifecycleApp
from task.apps.sender import TaskSender
from task.bus.base import Producer
from task.bus.registry import open_producer
from task.errors import BusError, ConfigError
from task.ledger.base import Ledger
from task.ledger.registry import open_ledger
from task.settings import AppSettings, BusSettings
from task.task import Task

__all__ = ["BatchRequest", "HttpApp", "HttpSettings", "TaskRequest"]

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MetaField = str | dict[str, str | list[str]]


class HttpSettings(BusSettings):
    """``taskbus http``: create tasks from HTTP requests."""

    host: str = Field(
        "127.0.0.1", description="address to bind (localhost unless told; 0.0.0.0 for all)"
    )
    port: int = Field(8080, ge=0, le=65535, description="port to listen on")
    token: SecretStr = Field(
        SecretStr(""), description="bearer token every request must carry (empty: none)"
    )
    max_body: int = Field(1 << 20, ge=1024, description="largest request body in bytes")
    max_tasks: int = Field(10_000, ge=1, description="most tasks one request may create")
    timezone: str = Field("UTC", description="zone of /batch times given without one")


class TaskRequest(BaseModel):
    """One task as ``POST /task`` takes it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1)
    info: str = ""
    id: str = ""
    job: str = ""
    meta: MetaField = ""
    topic: str = ""


class BatchRequest(BaseModel):
    """``POST /batch``: the batch app's options as JSON."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    type: str = Field(min_length=1)
    template: str = ""
    start: str = Field(alias="from", min_length=1)
    end: str = Field("", alias="to")
    every: str = "1h"
    daily: bool = False
    timezone: str = ""
    topic: str = ""
    job: str = ""
    meta: dict[str, str | list[str]] = Field(default_factory=dict)
    dry_run: bool = False


class _BadRequest(Exception):
    """A request we answer with 400 and this message."""


def _reason(err: ValidationError, where: str = "") -> str:
    first = err.errors()[0]
    name = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}{name}: {first['msg']}"


def _json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class HttpApp(LifecycleApp):
    """Serves ``/task``, ``/batch``, ``/healthz`` and ``/stats`` until stopped.

    The app takes ownership of the producer and ledger it is given: it starts and stops
    them. ``port`` 0 lets the OS choose; ``self.port`` holds the real one once started.
    """

    Settings: ClassVar[type[AppSettings]] = HttpSettings

    def __init__(
        self,
        *,
        producer: Producer,
        ledger: Ledger | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str = "",
        max_body: int = 1 << 20,
        max_tasks: int = 10_000,
        timezone: str = "UTC",
        status_port: int = 0,
        status_host: str = "127.0.0.1",
    ) -> None:
        self.sender = TaskSender(producer, ledger)
        self.lifecycle = Lifecycle("http", self.stats, logger=logger,
                                   parts=[producer, _Server(self)], ledger=ledger,
                                   status_host=status_host, status_port=status_port)
        self.host = host
        self.port = port
        self.token = token
        self.max_body = max_body
        self.max_tasks = max_tasks
        self.timezone = timezone
        self._stopping = asyncio.Event()
        self._started = time.monotonic()
        self.counts = {"requests": 0, "rejected": 0, "unauthorized": 0, "bus_errors": 0}
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "listen": "",  # known once listening
            "bus": producer.info().get("bus"),
            "ledger": "" if ledger is None else type(ledger).__name__,
            "status_port": status_port or None, "token": "set" if token else "none",
            "max_tasks": max_tasks, "timezone": timezone,
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> HttpApp:
        """Build the app from ``HttpSettings``; no I/O.

        Raises:
            ConfigError: a bad bus or ledger URL.
        """
        assert isinstance(settings, HttpSettings)
        app = cls(
            producer=open_producer(settings.producer_url, credentials=settings.credentials()),
            ledger=open_ledger(settings.ledger) if settings.ledger else None,
            host=settings.host,
            port=settings.port,
            token=settings.token.get_secret_value(),
            max_body=settings.max_body,
            max_tasks=settings.max_tasks,
            timezone=settings.timezone,
            status_port=settings.status_port,
            status_host=settings.status_host,
        )
        app.startup.update(bus=settings.producer_url, ledger=settings.ledger)
        return app

    def web_app(self) -> web.Application:
        """The aiohttp application, for embedding in another server."""
        app = web.Application(client_max_size=self.max_body, middlewares=[self._guard])
        app.router.add_post("/task", self._post_task)
        app.router.add_post("/batch", self._post_batch)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/stats", self._stats)
        return app

    async def opened(self) -> None:
        """Warn when anyone on the network may create tasks."""
        if not self.token and not _is_loopback(self.host):
            logger.warning(
                "listening on %s without a token: anyone who can reach it can create tasks",
                self.host,
            )

    async def work(self) -> int:
        """Serve until ``stop()``; returns 0."""
        await self._stopping.wait()
        return 0

    async def stop(self) -> None:
        """Stop serving; requests in flight finish. Idempotent."""
        self._stopping.set()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Checks the token and turns every error into a JSON answer."""
        self.counts["requests"] += 1
        if self.token and request.path != "/healthz" and not self._authorized(request):
            self.counts["unauthorized"] += 1
            response = _json_error(
                401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="taskbus"'
            return response
        try:
            return await handler(request)
        except _BadRequest as err:
            self.counts["rejected"] += 1
            return _json_error(400, str(err))
        except web.HTTPException as err:  # 404, 405, 413 from aiohttp itself
            self.counts["rejected"] += 1
            hint = {
                404: "; try POST /task, POST /batch, GET /healthz or GET /stats",
                413: f"; the limit is {self.max_body} bytes",
            }.get(err.status, "")
            return _json_error(err.status, f"{err.reason}{hint}")

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as err:
            raise _BadRequest(f"body is not JSON: {err}") from err

    async def _post_task(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise _BadRequest("an empty list: send a task object or a list of them")
        if len(items) > self.max_tasks:
            raise _BadRequest(f"{len(items)} tasks in one request; the limit is {self.max_tasks}")
        prepared = []
        for n, item in enumerate(items):
            where = f"task {n}: " if isinstance(body, list) else ""
            if not isinstance(item, dict):
                raise _BadRequest(f"{where}a task is a JSON object, got {type(item).__name__}")
            try:
                req = TaskRequest.model_validate(item)
            except ValidationError as err:
                raise _BadRequest(_reason(err, where)) from err
            task = Task.new(
                req.type, req.info, id=req.id or None, job=req.job or None, meta=req.meta or None
            )
            prepared.append((task, req.topic or req.type))
        return await self._send_all(prepared, {})

    async def _post_batch(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise _BadRequest(f"a batch is a JSON object, got {type(body).__name__}")
        try:
            req = BatchRequest.model_validate(body)
            plan = make_plan(
                type=req.type,
                template=req.template,
                start=req.start,
                end=req.end,
                every=req.every,
                daily=req.daily,
                timezone=req.timezone or self.timezone,
                topic=req.topic,
                job=req.job,
                meta={k: [v] if isinstance(v, str) else v for k, v in req.meta.items()},
                max_tasks=self.max_tasks,
            )
        except ValidationError as err:
            raise _BadRequest(_reason(err)) from err
        except ConfigError as err:
            raise _BadRequest(str(err).replace("--", "")) from err
        steps = list(plan.tasks())
        if req.dry_run:
            return web.json_response({"tasks": [json.loads(t.to_json()) for _, t in steps]})
        topic = plan.topic or plan.type
        span: dict[str, object] = {
            "first": steps[0][0].isoformat(),
            "last": steps[-1][0].isoformat(),
        }
        return await self._send_all([(t, topic) for _, t in steps], span)

    async def _send_all(
        self, tasks: list[tuple[Task, str]], extra: dict[str, object]
    ) -> web.Response:
        ids: list[str] = []
        for task, topic in tasks:
            try:
                await self.sender.send(task, topic)
            except BusError as err:
                self.counts["bus_errors"] += 1
                logger.error("bus refused a task after %d of %d: %s", len(ids), len(tasks), err)
                return _json_error(503, f"the bus refused the task: {err}", sent=len(ids), ids=ids)
            ids.append(task.id)
        return web.json_response({"sent": len(ids), "ids": ids, **extra}, status=201)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def stats(self) -> dict[str, object]:
        """Request and task counters, for ``/stats``."""
        return {
            "app": "http",
            "runtime": round(time.monotonic() - self._started, 3),
            "listen": f"{self.host}:{self.port}",
            **self.counts,
            **self.sender.stats(),
        }



class _Server:
    """The app's aiohttp server as a lifecycle part; ``start`` puts the real port in the app."""

    def __init__(self, app: HttpApp) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app.web_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.app.host, self.app.port).start()
        self.app.port = int(self._runner.addresses[0][1])
        self.app.startup["listen"] = f"http://{self.app.host}:{self.app.port}/task"

    async def stop(self) -> None:
        """Stop listening; requests in flight finish first. Idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
