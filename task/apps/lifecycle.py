"""One lifecycle for every app: open its parts, serve its status, run its work, close.

Every taskmaster and utility does the same around its own work: start its consumer and
producer (and whatever else listens, such as the HTTP app's server), serve ``/stats`` on
the status port, log one start-up line, and at the end stop all of that and close the ledger
it was given, in reverse order, even when something failed half way. ``Lifecycle`` does it
once; ``LifecycleApp`` is the base class that gives an app ``async with app`` and ``run()``.
An app that is not built on the base class (the worker around its Launcher) uses
``Lifecycle(...).run(body)``: the status server around an async body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, Self, TypeVar

from task.banner import log_startup
from task.health import LEDGER_UNHEALTHY_AFTER
from task.ledger.base import Ledger
from task.status import StatusServer

__all__ = ["Lifecycle", "LifecycleApp", "Part", "wait_or_stop"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Part(Protocol):
    """Something an app starts before its work and stops after: a consumer, a producer, a
    server. Consumers and producers of every bus are parts as they are."""

    async def start(self) -> None:
        """Connect or listen."""

    async def stop(self) -> None:
        """Disconnect or stop listening. Idempotent."""


class Lifecycle:
    """Opens and closes what one app uses, in one order for every app.

    ``open()``: start each of ``parts`` in order, then the status server (when
    ``status_port`` is set; ``metrics`` replaces the numbers of ``stats`` on ``/metrics``),
    then log the start-up line it is given on the app's ``logger`` (read then, so a part may
    fill it in as it starts). The status server judges ``/healthz`` from ``stats()``: a
    ledger failing every write for ``ledger_unhealthy_after`` seconds makes it fail.
    ``close()``: the status server, the parts in reverse order, then ``ledger``: every step
    runs even when one fails, and the first failure is raised after. A failed ``open()``
    closes what it had started.
    """

    def __init__(
        self,
        name: str,
        stats: Callable[[], Mapping[str, object]],
        *,
        logger: logging.Logger,
        parts: Sequence[Part | None] = (),
        ledger: Ledger | None = None,
        status_host: str = "127.0.0.1",
        status_port: int = 0,
        metrics: Callable[[], bytes] | None = None,
        ledger_unhealthy_after: float = LEDGER_UNHEALTHY_AFTER,
    ) -> None:
        self.name = name
        self.logger = logger
        self.parts = [part for part in parts if part is not None]
        self.ledger = ledger
        self.status: StatusServer | None
        if metrics is not None and status_port:
            self.status = StatusServer(stats, host=status_host, port=status_port, metrics=metrics, name=name,
                                       ledger_unhealthy_after=ledger_unhealthy_after)
        else:
            self.status = StatusServer.for_app(name, stats, host=status_host, port=status_port,
                                               ledger_unhealthy_after=ledger_unhealthy_after)
        self.opened = False
        self._started: list[Part | StatusServer] = []

    async def open(self, startup: Mapping[str, object] | None = None) -> None:
        """Start the parts and the status server, then log ``startup`` (when given) as the
        start-up line. Idempotent.

        Raises:
            Exception: what a part or the status server raised, after closing the others.
        """
        if self.opened:
            return
        self.opened = True
        try:
            for part in [*self.parts, self.status]:
                if part is not None:
                    await part.start()
                    self._started.append(part)
        except BaseException:
            await self.close()
            raise
        if startup is not None:
            log_startup(self.logger, self.name, **startup)

    async def close(self) -> None:
        """Stop what was started, newest first, then close the ledger. Idempotent.

        Raises:
            Exception: the first failure, once every step has run.
        """
        if not self.opened:
            return
        self.opened = False
        steps: list[Callable[[], Awaitable[None]]] = [p.stop for p in reversed(self._started)]
        self._started = []
        if self.ledger is not None:
            steps.append(self.ledger.close)
        first: BaseException | None = None
        for step in steps:
            try:
                await step()
            except Exception as err:  # noqa: BLE001 - every part gets its stop; the first failure is raised
                if first is None:
                    first = err
                else:
                    logger.error("%s: closing failed too: %s", self.name, err)
        if first is not None:
            raise first

    async def run(self, body: Callable[[], Awaitable[T]]) -> T:
        """Open, await ``body``, close (also when ``body`` fails); its result."""
        await self.open()
        try:
            return await body()
        finally:
            await self.close()


class LifecycleApp:
    """Base of the apps: ``async with app`` opens and closes its ``lifecycle``, ``run()``
    does ``work()`` inside it (or inside the one already open).

    A subclass sets ``self.lifecycle`` in ``__init__`` and defines ``work()`` and
    ``stop()``; it may set ``startup`` (the fields of its start-up line, which
    ``from_settings`` completes) and override ``opened()`` (checks and warnings once the
    parts run) and ``closing()`` (what must reach the bus before the parts stop).
    """

    lifecycle: Lifecycle
    #: what the start-up line names; None: no start-up line
    startup: dict[str, object] | None = None

    async def work(self) -> int:
        """What the app does until finished or stopped; the exit status."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Make ``work()`` return. Idempotent."""
        raise NotImplementedError

    def banner(self) -> Mapping[str, object] | None:
        """The fields of the start-up line, read once the parts run; None for none."""
        return self.startup

    async def opened(self) -> None:
        """Called once the parts run and the start-up line is logged."""

    async def closing(self) -> None:
        """Called after ``stop()``, before the parts stop."""

    async def __aenter__(self) -> Self:
        await self.lifecycle.open(self.banner())
        try:
            await self.opened()
        except BaseException:
            await self.lifecycle.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop()
            await self.closing()
        finally:
            await self.lifecycle.close()

    async def run(self) -> int:
        """``work()`` between open and close; returns its exit status."""
        if self.lifecycle.opened:
            return await self.work()
        async with self:
            return await self.work()


async def wait_or_stop(
    stopping: asyncio.Event,
    seconds: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Wait ``seconds`` on ``sleep`` (a test passes its clock's), waking as soon as
    ``stopping`` is set; True when it was."""
    if stopping.is_set():
        return True
    sleeper = asyncio.ensure_future(sleep(seconds))
    stopper = asyncio.ensure_future(stopping.wait())
    _, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return stopping.is_set()
