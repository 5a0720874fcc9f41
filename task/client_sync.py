"""``SyncClient``: ``task.Client`` for code without an event loop (scripts, WSGI web apps).

It runs a ``Client`` on an event loop of its own in a background thread, so it works the
same whether or not the calling thread has a loop, and several threads may share one: each
call is handed to that loop and the caller blocks until it is done.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from contextlib import suppress
from typing import Concatenate, ParamSpec, Self, TypeVar

from task.client import Client
from task.errors import ConfigError
from task.task import Task

__all__ = ["SyncClient"]

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[object, object, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """``Client.<method>`` as a blocking ``SyncClient`` method, so the two never drift: the
    same parameters (mypy checks calls against them, ``help()`` shows them) and docstring,
    run on the client's loop; it raises what the ``Client`` method raises, and ConfigError
    when the client is not open."""

    @functools.wraps(method)
    def blocking(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(method(self.client, *args, **kwargs))

    blocking.__qualname__ = f"SyncClient.{method.__name__}"
    return blocking


class SyncClient:
    """The blocking form of ``Client``: ``with Client.sync(url) as client: client.send(...)``."""

    def __init__(self, client: Client) -> None:
        """Run ``client`` (not yet open) on a loop of its own; ``Client.sync`` builds one."""
        self.client = client
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

    #: ``Client.send``, blocking
    send = _blocking(Client.send)
    #: ``Client.wait``, blocking (TimeoutError after ``timeout``)
    wait = _blocking(Client.wait)
    #: ``Client.wait_all``, blocking: every instance's done task of a broadcast
    wait_all = _blocking(Client.wait_all)
    #: ``Client.cancel``, blocking
    cancel = _blocking(Client.cancel)

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
