"""The status endpoint every app and the Launcher can serve: /healthz, /stats, /metrics.

A few lines of asyncio streams rather than a web framework, so the core needs no extra
dependency. ``/metrics`` is Prometheus text from prometheus-client when it is installed
(``taskbus[metrics]``) and the app registers metrics; otherwise it answers 404, with the
pip command in the body when the library is what is missing (a 500 would page someone).
Binds to 127.0.0.1 unless told otherwise: stats are for operators, not the internet.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Self

from task.metrics import INSTALL_HINT, metrics_installed

__all__ = ["StatusServer"]

logger = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class StatusServer:
    """Serves ``stats()`` as JSON on ``/stats``, health on ``/healthz`` and ``metrics()``.

    ``healthy`` returns False when the app cannot do its work (bus gone): ``/healthz`` then
    answers 503 so an orchestrator restarts it.
    """

    def __init__(
        self,
        stats: Callable[[], Mapping[str, object]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics: Callable[[], bytes] | None = None,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        self._stats = stats
        self._metrics = metrics
        self._healthy = healthy
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None

    @classmethod
    def for_app(
        cls, app: str, stats: Callable[[], Mapping[str, object]], *, host: str, port: int
    ) -> StatusServer | None:
        """The status endpoint of ``taskbus <app>``, its stats' numbers on ``/metrics``;
        None when ``port`` is 0 (the apps' "off")."""
        if not port:
            return None
        from task.metrics import stats_metrics

        return cls(stats, host=host, port=port, metrics=stats_metrics(app, stats))

    async def start(self) -> None:
        """Listen; with port 0 the OS picks one, readable as ``self.port`` afterwards."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("status endpoint on http://%s:%d/stats", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        if self._server is not None:
            self._server.close()
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
            ok = self._healthy() if self._healthy else True
            return (200, "text/plain", b"ok\n") if ok else (503, "text/plain", b"unhealthy\n")
        if path == "/stats":
            body = json.dumps(self._stats(), default=str, indent=1).encode()
            return 200, "application/json", body + b"\n"
        if path == "/metrics":
            if self._metrics is not None:
                return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics()
            if not metrics_installed():
                return 404, "text/plain", f"/metrics needs prometheus-client: {INSTALL_HINT}\n".encode()
            return 404, "text/plain", b"this app has no metrics; try /healthz or /stats\n"
        return 404, "text/plain", b"try /healthz, /stats or /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        except Exception:  # a bug in stats() must not kill the app
            logger.exception("status endpoint failed")
        finally:
            writer.close()
