"""``SyncClient``: ``task.Client`` for code without an event loop (scripts, WSGI web apps).

It runs a ``Client`` on an event loop of its own in a background thread, so it works the
same whether or not the calling thread has a loop, and several threads may share one: each
call is handed to that loop and the caller blocks until it is done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Coroutine, Iterator
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Literal, Self, TypeVar

from task.client import Client, Meta
from task.credentials import Credentials
from task.delayed import CancelResult
from task.errors import ConfigError
from task.ledger.base import Ledger
from task.task import Task

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    """The blocking form of ``Client``: ``with Client.sync(url) as client: client.send(...)``."""

    def __init__(
        self,
        bus_url: str,
        *,
        ledger: str | Ledger | None = None,
        done_topic: str = "done",
        credentials: Credentials | None = None,
    ) -> None:
        self.client = Client(bus_url, ledger=ledger, done_topic=done_topic, credentials=credentials)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _call(self, coro: Coroutine[object, object, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise ConfigError("the client is not open: use `with Client.sync(...) as client:`")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # an interrupted caller (Ctrl-C) does not leave the call running
            raise

    def open(self) -> None:
        """Start the background loop and open the client. Idempotent.

        Raises:
            ConfigError: a bad bus or ledger URL, a missing extra.
            BusError: the bus cannot be reached.
        """
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="taskbus-client", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self.client.open())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        """Close the client and stop the background loop. Idempotent."""
        if self._loop is None:
            return
        try:
            self._call(self.client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        type: str,
        info: str = "",
        *,
        job: str = "",
        meta: Meta | None = None,
        id: str | None = None,
        topic: str | None = None,
        delay: float | timedelta | None = None,
        at: datetime | None = None,
        scope: Literal["", "all"] = "",
    ) -> Task:
        """``Client.send``, blocking. Raises what it raises."""
        return self._call(self.client.send(
            type, info, job=job, meta=meta, id=id, topic=topic, delay=delay, at=at, scope=scope,
        ))

    def wait(self, id: str, timeout: float | None = None) -> Task:
        """``Client.wait``, blocking. Raises what it raises (TimeoutError after ``timeout``)."""
        return self._call(self.client.wait(id, timeout))

    def wait_all(self, id: str, timeout: float, count: int | None = None) -> list[Task]:
        """``Client.wait_all``, blocking: every instance's done task of a broadcast."""
        return self._call(self.client.wait_all(id, timeout, count))

    def done(self, type: str | None = None, job: str | None = None) -> Iterator[Task]:
        """``Client.done`` as a blocking iterator, following from this call on; it ends when
        the client closes.

        Raises:
            ConfigError: the client is not open.
        """

        async def start() -> AsyncGenerator[Task, None]:
            return self.client.done(type, job)  # on the client's loop, which its queue needs

        return self._iterate(self._call(start()))

    def _iterate(self, follow: AsyncGenerator[Task, None]) -> Iterator[Task]:
        async def next_task() -> Task | None:
            try:
                return await anext(follow)
            except StopAsyncIteration:
                return None

        try:
            while (task := self._call(next_task())) is not None:
                yield task
        finally:
            if self._loop is not None:
                with suppress(RuntimeError):  # still running after an interrupted call
                    self._call(follow.aclose())

    def cancel(self, id: str) -> CancelResult:
        """``Client.cancel``, blocking. Raises what it raises."""
        return self._call(self.client.cancel(id))
