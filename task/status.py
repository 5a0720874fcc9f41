"""The status endpoint every app and the Launcher can serve: /healthz, /readyz, /stats,
/metrics and a status page on /.

``/healthz`` and ``/readyz`` are judged from ``stats()`` (``task.health``): a worker whose bus
connection is down, or whose ledger has failed every write for ``ledger_unhealthy_after``
seconds, answers 503 with the reason in the body; ``/readyz`` also answers 503 until the
consumer has subscribed. ``/`` is the HTML page of ``task.web.worker_page``. A few lines of asyncio streams rather than a web framework, so the core needs no extra
dependency. ``/metrics`` is Prometheus text from prometheus-client when it is installed
(``taskbus[metrics]``) and the app registers metrics; otherwise it answers 404, with the
pip command in the body when the library is what is missing (a 500 would page someone).
Binds to 127.0.0.1 unless told otherwise: stats are for operators, not the internet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Self

from task.health import LEDGER_UNHEALTHY_AFTER, Verdict, judge
from task.metrics import INSTALL_HINT, metrics_installed

__all__ = ["StatusServer", "backlog_metrics"]

logger = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
#: the shared stylesheet's path (``task.web.page.STYLESHEET_PATH``; not imported: the page
#: modules load on the first request for a page)
STYLESHEET_PATH = "/style.css"
#: backlog counts on /metrics: stats key -> (gauge, help)
_BACKLOG_GAUGES = {
    "waiting": ("taskbus_backlog_waiting", "Tasks waiting on the bus for this worker's channel."),
    "in_flight": ("taskbus_backlog_in_flight", "Tasks delivered to the channel and not yet acknowledged."),
    "redelivered": ("taskbus_backlog_redelivered", "Tasks of the channel delivered more than once."),
    "delayed": ("taskbus_backlog_delayed", "Tasks waiting in the ledger's schedule."),
    "oldest_age_seconds": ("taskbus_backlog_oldest_age_seconds", "Age of the oldest waiting task."),
}


class StatusServer:
    """Serves ``stats()`` as JSON on ``/stats``, health on ``/healthz`` and ``/readyz``,
    ``metrics()`` on ``/metrics`` and the status page of app ``name`` on ``/``.

    Health is judged from ``stats()`` (its ``health`` key, see ``task.health``); ``healthy``,
    when given, is asked too: False makes ``/healthz`` answer 503 as well.
    """

    def __init__(
        self,
        stats: Callable[[], Mapping[str, object]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics: Callable[[], bytes] | None = None,
        healthy: Callable[[], bool] | None = None,
        name: str = "app",
        ledger_unhealthy_after: float = LEDGER_UNHEALTHY_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stats = stats
        self._metrics = metrics
        self._healthy = healthy
        self.name = name
        self.ledger_unhealthy_after = ledger_unhealthy_after
        self.clock = clock
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        #: requests being answered; stop() ends them (a browser keeps one open ahead of its next)
        self._handlers: set[asyncio.Task[None]] = set()

    @classmethod
    def for_app(
        cls, app: str, stats: Callable[[], Mapping[str, object]], *, host: str, port: int,
        ledger_unhealthy_after: float = LEDGER_UNHEALTHY_AFTER,
    ) -> StatusServer | None:
        """The status endpoint of ``taskbus <app>``, its stats' numbers on ``/metrics``;
        None when ``port`` is 0 (the apps' "off")."""
        if not port:
            return None
        from task.metrics import stats_metrics

        return cls(stats, host=host, port=port, metrics=stats_metrics(app, stats), name=app,
                   ledger_unhealthy_after=ledger_unhealthy_after)

    def verdict(self, stats: Mapping[str, object] | None = None) -> Verdict:
        """Health and readiness now, from ``stats`` (read when not given) and ``healthy``."""
        found = judge(self._stats() if stats is None else stats, now=self.clock(),
                      ledger_unhealthy_after=self.ledger_unhealthy_after)
        if self._healthy is not None and not self._healthy():
            return Verdict(found.started, (*found.problems, "the app reports itself unhealthy"))
        return found

    async def start(self) -> None:
        """Listen; with port 0 the OS picks one, readable as ``self.port`` afterwards."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("status endpoint on http://%s:%d/stats", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        if self._server is not None:
            self._server.close()
            for handler in list(self._handlers):
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        path = path.split("?", 1)[0]
        if path == "/healthz":
            verdict = self.verdict()
            return (200 if verdict.healthy else 503), "text/plain", verdict.healthz().encode() + b"\n"
        if path == "/readyz":
            verdict = self.verdict()
            return (200 if verdict.ready else 503), "text/plain", verdict.readyz().encode() + b"\n"
        if path == "/stats":
            body = json.dumps(self._stats(), default=str, indent=1).encode()
            return 200, "application/json", body + b"\n"
        if path == "/metrics":
            if self._metrics is not None:
                body = self._metrics() + backlog_metrics(self._stats().get("backlog"))
                return 200, "text/plain; version=0.0.4; charset=utf-8", body
            if not metrics_installed():
                return 404, "text/plain", f"/metrics needs prometheus-client: {INSTALL_HINT}\n".encode()
            return 404, "text/plain", b"this app has no metrics; try /healthz or /stats\n"
        if path == "/":
            from task.web.worker_page import render_status_page

            stats = self._stats()
            page = render_status_page(self.name, stats, self.verdict(stats), now=self.clock())
            return 200, "text/html; charset=utf-8", page
        if path == STYLESHEET_PATH:
            from task.web.page import stylesheet

            return 200, "text/css; charset=utf-8", stylesheet()
        return 404, "text/plain", b"try /, /healthz, /readyz, /stats or /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)).strip():
                pass  # headers are not needed
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            status, ctype, body = self._answer(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError) as err:
            logger.debug("status request dropped: %s", err)
        except asyncio.CancelledError:
            # stop() ends a connection that sent nothing; the handler is its own task, so
            # ending quietly is right (a cancelled one is logged as a traceback on 3.11)
            logger.debug("status request dropped: the status server stopped")
        except Exception:  # a bug in stats() must not kill the app
            logger.exception("status endpoint failed")
        finally:
            writer.close()
            if me is not None:
                self._handlers.discard(me)


def backlog_metrics(backlog: object) -> bytes:
    """Prometheus gauges of a backlog reading (``stats()["backlog"]``), labelled by topic
    and channel; empty when there is no reading or it failed. Counts the bus does not know
    are left out rather than written as 0."""
    if not isinstance(backlog, Mapping) or backlog.get("error"):
        return b""
    labels = f'topic="{_label(backlog.get("topic"))}",channel="{_label(backlog.get("channel"))}"'
    lines: list[str] = []
    for key, (name, text) in _BACKLOG_GAUGES.items():
        value = backlog.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name}{{{labels}}} {value}"]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _label(value: object) -> str:
    return str(value or "").replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
