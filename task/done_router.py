"""Where a client's done tasks go: to ``wait`` calls, to ``done()`` followers, or nowhere.

A done task may arrive before anyone waits for it (a fast worker), so the done tasks of ids
this client sent are kept until a ``wait`` takes them; every other done task goes only to
callers already waiting for its id and to followers, then is dropped. Both what is kept and
what is expected are bounded (the oldest are forgotten first), so a client that sends
without ever waiting does not grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncGenerator
from weakref import WeakSet

from task.errors import BusError, ConfigError
from task.task import Task

__all__ = ["KEEP_DONE", "DoneRouter"]

logger = logging.getLogger(__name__)

#: sent ids awaited at most, and done tasks kept for a later ``wait`` at most
KEEP_DONE = 10_000
#: done tasks a ``done()`` follower may fall behind by; beyond, the oldest are dropped
FOLLOWER_BACKLOG = 10_000


class DoneRouter:
    """Routes done tasks by id; no I/O, one event loop."""

    def __init__(self, keep: int = KEEP_DONE) -> None:
        self.keep = keep
        self._waiting: dict[str, list[asyncio.Future[Task]]] = {}
        self._expected: OrderedDict[str, None] = OrderedDict()
        self._arrived: OrderedDict[str, Task] = OrderedDict()
        #: broadcast ids: every done task of each (one per worker instance), kept for wait_all
        self._many: OrderedDict[str, list[Task]] = OrderedDict()
        self._more: dict[str, asyncio.Event] = {}
        self._followers: WeakSet[asyncio.Queue[Task | None]] = WeakSet()
        self._closed: BusError | None = None
        #: done tasks dropped because a follower fell behind
        self.dropped = 0

    def expect_many(self, id: str) -> None:
        """Keep every done task of ``id`` (a broadcast: one per worker instance) until
        ``wait_all`` takes them (call before sending)."""
        self._many[id] = []
        while len(self._many) > self.keep:
            self._many.popitem(last=False)

    def expect(self, id: str) -> None:
        """Keep the done task of ``id`` until a ``wait`` takes it (call before sending)."""
        self._expected[id] = None
        self._expected.move_to_end(id)
        while len(self._expected) > self.keep:
            old, _ = self._expected.popitem(last=False)
            logger.debug("client: no longer keeping the done task of %s (over %d sent)", old, self.keep)

    def forget(self, id: str) -> None:
        """The task was not sent after all: keep nothing for it."""
        self._expected.pop(id, None)
        self._many.pop(id, None)

    def route(self, task: Task) -> None:
        """Hand a done task to the waits for its id, keep it if expected, and feed followers."""
        many = self._many.get(task.id)
        if many is not None:
            many.append(task)
            more = self._more.get(task.id)
            if more is not None:
                more.set()
        futures = self._waiting.pop(task.id, [])
        for future in futures:
            if not future.done():
                future.set_result(task)
        if task.id in self._expected:
            del self._expected[task.id]
            if not futures:
                self._arrived[task.id] = task
                while len(self._arrived) > self.keep:
                    self._arrived.popitem(last=False)
        for queue in list(self._followers):
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    logger.warning("client: a done() follower is %d behind; %d done tasks dropped so far",
                                   queue.qsize(), self.dropped)
            queue.put_nowait(task)

    async def wait(self, id: str, timeout: float | None = None) -> Task:
        """The done task of ``id``: one that arrived already (for an id this client sent), or
        the next to arrive.

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
            BusError: the done topic can no longer be read.
        """
        task = self._arrived.pop(id, None)
        if task is not None:
            return task
        if self._closed is not None:
            raise self._closed
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(id, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no done task for {id} within {timeout:g}s") from None
        finally:
            waits = self._waiting.get(id)
            if waits is not None and future in waits:
                waits.remove(future)
                if not waits:
                    del self._waiting[id]

    async def wait_all(self, id: str, timeout: float, count: int | None = None) -> list[Task]:
        """Every done task of the broadcast ``id`` that arrives within ``timeout`` seconds (or
        until ``count`` arrived), in arrival order; those that came before the call included.
        Nobody knows how many workers were running when it was sent, so the time decides.

        Raises:
            ConfigError: ``id`` was not sent as a broadcast by this client.
            BusError: the done topic can no longer be read before ``count`` arrived.
        """
        got = self._many.get(id)
        if got is None:
            raise ConfigError(f"{id} was not sent with scope='all' by this client: use wait() for it")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        more = self._more.setdefault(id, asyncio.Event())
        try:
            while count is None or len(got) < count:
                if self._closed is not None:
                    raise self._closed
                more.clear()
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(more.wait(), left)
                except TimeoutError:
                    break
        finally:
            self._more.pop(id, None)
        return list(got)

    def follow(self) -> AsyncGenerator[Task, None]:
        """Every done task routed from this call on, until ``close``.

        The follower is registered now, not at the first iteration, so a done task that
        arrives between this call and the first ``anext`` is not missed. One dropped
        without being iterated is forgotten with it (the router holds it weakly).
        """
        queue: asyncio.Queue[Task | None] = asyncio.Queue(FOLLOWER_BACKLOG)
        if self._closed is None:
            self._followers.add(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[Task | None]) -> AsyncGenerator[Task, None]:
        try:
            while self._closed is None or not queue.empty():
                task = await queue.get()
                if task is None:
                    return
                yield task
        finally:
            self._followers.discard(queue)

    def close(self, reason: BusError) -> None:
        """No more done tasks will come: waits fail with ``reason``, followers end."""
        if self._closed is not None:
            return
        self._closed = reason
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_exception(reason)
        self._waiting.clear()
        for queue in list(self._followers):
            if not queue.full():  # a full one ends once drained: its loop sees _closed
                queue.put_nowait(None)
