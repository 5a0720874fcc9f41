"""``Client``: send tasks from Python and await their done tasks.

```python
async with Client("jetstream://127.0.0.1:4222", ledger="sqlite:./ledger.db") as client:
    sent = await client.send("fetch-file", "s3://b/k", job="daily")
    done = await client.wait(sent.id, timeout=120)
```

The client follows the done topic from the moment it opens, on a reader of its own
(``task.done_follower``), so the done task of a worker faster than the caller is never
missed and no other reader of the done topic loses one. Sending records the task as
``created`` in the ledger first when one is set, as every taskmaster does (``TaskSender``);
``delay=``/``at=`` go through ``task.delayed``. ``Client.sync(...)`` is the blocking form.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Self

from task.apps.sender import TaskSender
from task.bus.base import Consumer, Producer
from task.bus.broadcast import SCOPE_ALL, SCOPE_KEY, broadcast_topic
from task.bus.registry import open_producer
from task.credentials import Credentials
from task.delayed import CancelResult, cancel_delayed, due_time, send_delayed
from task.done_follower import open_done_follower
from task.done_router import DoneRouter
from task.errors import BusError, ConfigError, InvalidTaskError
from task.ledger.base import Ledger
from task.task import Task

if TYPE_CHECKING:
    from task.client_sync import SyncClient

__all__ = ["Client"]

logger = logging.getLogger(__name__)

#: meta as ``Task.new`` takes it: a query string or a mapping of keys to a value or values
Meta = str | Mapping[str, str | Sequence[str]]


class Client:
    """Sends tasks to a bus and hands back their done tasks. An async context manager.

    ``ledger`` is a ledger URL (opened and closed by the client) or a ``Ledger`` (left
    open). Nothing connects before ``async with`` (or ``open()``).
    """

    def __init__(
        self,
        bus_url: str,
        *,
        ledger: str | Ledger | None = None,
        done_topic: str = "done",
        credentials: Credentials | None = None,
    ) -> None:
        self.bus_url = bus_url
        self.done_topic = done_topic
        self.credentials = credentials or Credentials()
        self._ledger_url = ledger if isinstance(ledger, str) else None
        self.ledger: Ledger | None = None if isinstance(ledger, str) else ledger
        self._producer: Producer | None = None
        self._sender: TaskSender | None = None
        self._follower: Consumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._router = DoneRouter()
        self._closed = False

    @classmethod
    def sync(
        cls,
        bus_url: str,
        *,
        ledger: str | Ledger | None = None,
        done_topic: str = "done",
        credentials: Credentials | None = None,
    ) -> SyncClient:
        """The blocking client for scripts and web apps: same methods, its own event loop in
        a background thread. Use it as a context manager (``with Client.sync(url) as c:``)."""
        from task.client_sync import SyncClient

        return SyncClient(cls(bus_url, ledger=ledger, done_topic=done_topic, credentials=credentials))

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect the producer and subscribe to the done topic. Idempotent.

        Raises:
            ConfigError: a bad bus or ledger URL, a missing extra.
            BusError: the bus cannot be reached.
        """
        if self._producer is not None:
            return
        if self._closed:
            raise ConfigError("this client is closed; make a new Client")
        if self._ledger_url is not None and self.ledger is None:
            from task.ledger.registry import open_ledger

            self.ledger = open_ledger(self._ledger_url)
        producer = open_producer(self.bus_url, credentials=self.credentials)
        follower = open_done_follower(self.bus_url, topic=self.done_topic, credentials=self.credentials)
        try:
            await producer.start()
            await follower.start()  # subscribed from here on: no done task sent later is missed
        except BaseException:
            await producer.stop()
            await follower.__aexit__(None, None, None)
            await self._close_ledger()
            raise
        self._producer, self._follower = producer, follower
        self._sender = TaskSender(producer, self.ledger)
        self._reader = asyncio.create_task(self._read(follower), name="client-done-reader")

    async def close(self) -> None:
        """Stop following the done topic, flush the producer, close an owned ledger.
        Waits still running fail with BusError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._router.close(BusError("the client is closed"))
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._follower is not None:
            await self._follower.__aexit__(None, None, None)
        if self._producer is not None:
            await self._producer.stop()
        await self._close_ledger()

    async def _close_ledger(self) -> None:
        if self._ledger_url is not None and self.ledger is not None:
            ledger, self.ledger = self.ledger, None
            await ledger.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self, follower: Consumer) -> None:
        """Route every done task the follower gets until it ends or fails."""
        reason = BusError(f"the done topic {self.done_topic!r} ended")
        try:
            while (message := await follower.msg()) is not None:
                try:
                    self._router.route(Task.from_json(message.body))
                except InvalidTaskError as err:
                    logger.debug("client: not a task on %r: %s", self.done_topic, err)
                try:
                    await message.ack()
                except BusError as err:
                    logger.debug("client: ack on %r failed: %s", self.done_topic, err)
        except BusError as err:
            logger.warning("client: cannot read the done topic %r: %s", self.done_topic, err)
            reason = err
        self._router.close(reason)

    # ------------------------------------------------------------------ the API

    def _ready(self) -> TaskSender:
        if self._closed:
            raise ConfigError("this client is closed; make a new Client")
        if self._sender is None:
            raise ConfigError("the client is not open: use `async with Client(...) as client:`")
        return self._sender

    async def send(
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
        """Create a task and send it to ``topic`` (default: its type); the task as sent.

        With ``scope="all"`` it is a broadcast: it goes to ``<topic>.all`` and every worker
        of the type running (unless started with ``--no-broadcast``) does it once, each
        sending its own done task (``wait_all`` collects them). A broadcast is not recorded in the ledger (each worker
        records its own run) and cannot be delayed.

        The task is recorded as created in the ledger first when one is set. With ``delay``
        (seconds or a timedelta) or ``at`` (an aware datetime) it is due then, never earlier:
        held by the bus where it can, otherwise by the ledger (``task.delayed``); its meta
        says ``run_at``.

        Raises:
            ConfigError: not open, no type, both ``delay`` and ``at``, a naive ``at``, or a
                delay on a bus without native delay and no ledger.
            BusError: the bus refused the task.
            LedgerError: the ledger refused to hold a delayed task.
        """
        sender = self._ready()
        if not type:
            raise ConfigError("a task needs a type: client.send(TYPE, INFO)")
        task = Task.new(type, info, id=id, job=job or None, meta=meta or None)
        topic = topic or type
        if scope == "all":
            if delay is not None or at is not None:
                raise ConfigError("a broadcast (scope='all') cannot be delayed: send it when it is due")
            task.set_meta(SCOPE_KEY, SCOPE_ALL)
            self._router.expect_many(task.id)
            try:
                await sender.producer.send(broadcast_topic(topic), task.to_json(), key=task.id)
            except BaseException:
                self._router.forget(task.id)
                raise
            return task
        if scope:
            raise ConfigError(f"scope must be '' or 'all', not {scope!r}")
        self._router.expect(task.id)
        try:
            if delay is None and at is None:
                await sender.send(task, topic)
                return task
            held = await send_delayed(sender.producer, topic, task, due_time(at=at, delay=delay),
                                      ledger=self.ledger)
            return held.task
        except BaseException:
            self._router.forget(task.id)
            raise

    async def wait(self, id: str, timeout: float | None = None) -> Task:
        """The done task of ``id`` from the done topic.

        For a task this client sent, a done task that arrived before the call is returned
        too; for other ids, call ``wait`` before the done task can arrive.

        Raises:
            TimeoutError: no done task within ``timeout`` seconds (None: wait forever).
            BusError: the done topic can no longer be read, or the client closed.
            ConfigError: the client is not open.
        """
        self._ready()
        return await self._router.wait(id, timeout)

    async def wait_all(self, id: str, timeout: float, count: int | None = None) -> list[Task]:
        """Every done task of the broadcast ``id`` (sent with ``scope="all"``): one per worker
        instance that did it (meta ``instance=``), those arriving within ``timeout`` seconds,
        or until ``count`` have arrived when you know how many workers run.

        Raises:
            ConfigError: the client is not open, or ``id`` is no broadcast it sent.
            BusError: the done topic can no longer be read.
        """
        self._ready()
        return await self._router.wait_all(id, timeout, count)

    def done(self, type: str | None = None, job: str | None = None) -> AsyncGenerator[Task, None]:
        """Every done task from this call on (of ``type`` and ``job`` when given), until the
        client closes: ``async for d in client.done(type="fetch-file"):``. Following starts
        at the call, so ``follow = client.done()``, then a send, then ``anext(follow)``
        misses nothing.

        Raises:
            ConfigError: the client is not open.
        """
        self._ready()
        return _matching(self._router.follow(), type, job)

    async def cancel(self, id: str) -> CancelResult:
        """Cancel the delayed task ``id`` if the ledger still holds it (``result.outcome`` says
        whether it was cancelled, released already, or unknown; ``result.message`` says it
        in one line).

        Raises:
            ConfigError: the client has no ledger, or its ledger cannot cancel.
            LedgerError: the ledger cannot be reached.
        """
        self._ready()
        if self.ledger is None:
            raise ConfigError("cancel needs the ledger that holds delayed tasks: Client(url, ledger=...)")
        return await cancel_delayed(self.ledger, id)


async def _matching(
    follow: AsyncGenerator[Task, None], type: str | None, job: str | None
) -> AsyncGenerator[Task, None]:
    try:
        async for task in follow:
            if (type is None or task.type == type) and (job is None or task.job == job):
                yield task
    finally:
        await follow.aclose()
