"""``nats://h:p[,h:p]``: core NATS, at-most-once and fastest.

The consumer subscribes to the subject ``topic`` in the queue group ``channel``, so worker
processes of one channel share the work. Core NATS keeps nothing: a message published
while no worker listens, or held by a worker that dies, is gone. That is the documented
trade for speed; use ``jetstream://`` (or a ledger with ``recover``) when tasks must not be
lost. ``Message.ack``, ``nack`` and ``in_progress`` are no-ops and ``attempt`` is always 1.

Buffer: the server pushes; what it routed here waits for ``msg()`` in arrival order, up to
``pending_limit`` messages (and nats-py's 128 MiB); past that nats-py drops messages and a
slow consumer is logged, as core NATS does (``prefetch`` has nothing to bound). ``stop()``
unsubscribes and publishes the messages it held but never handed out back to the subject,
so another worker of the channel may still get them.

URL options: ``name``, ``token``, ``tls`` / ``tls_ca`` / ``tls_cert`` / ``tls_key``,
``connect_timeout``, ``max_reconnects`` (-1 = forever), ``reconnect_wait``,
``pending_limit`` (default 65536), ``flush`` (default false). Core NATS confirms nothing a
subscriber would see, so ``send`` returns once the client holds the message: its flusher
writes what has piled up at once, in the background, and ``stop()`` flushes the rest (the raw
client's fastest correct loop does the same). ``flush=true`` makes each send wait for one
PING/PONG round trip, shared by concurrent sends, which proves only that the server read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from task.bus.base import BusInfo, BusPart, no_ack
from task.bus.nats_connect import (
    CONNECT_PARAMS,
    DEFAULT_PORT,
    ConnectOptions,
    check_subject,
    connect,
    flush_in_order,
)
from task.bus.waiters import Waiters
from task.credentials import Credentials
from task.errors import BusClosedError, BusError
from task.url import parse_url

__all__ = ["NatsConsumer", "NatsMessage", "NatsOptions", "NatsProducer"]

logger = logging.getLogger(__name__)

_PARAMS = (*CONNECT_PARAMS, "pending_limit", "flush")
#: subjects a producer remembers as checked (a sender may publish to many)
_SUBJECTS_KEPT = 4096


@dataclass(frozen=True)
class NatsOptions:
    """Everything a ``nats://`` URL (plus credentials from settings) says."""

    connect: ConnectOptions
    pending_limit: int = 65536  #: messages the client buffers before dropping
    flush: bool = False  #: ``send`` waits for the server to have read the message

    @classmethod
    def from_url(cls, url: str, credentials: Credentials | None = None) -> NatsOptions:
        """Options from a ``nats://`` URL.

        Raises:
            ConfigError: an unknown or malformed option.
        """
        parsed = parse_url(url, DEFAULT_PORT)
        parsed.check_options(_PARAMS)
        return cls(
            connect=ConnectOptions.from_url(parsed, credentials or Credentials()),
            pending_limit=parsed.integer("pending_limit", 65536, minimum=1),
            flush=parsed.boolean("flush", False),
        )


class NatsMessage(Msg):
    """A core NATS message: nothing to acknowledge, so the settle methods do nothing.

    The consumer's client builds these itself (its ``msg_class``), so a message is made
    once per delivery rather than as nats-py's ``Msg`` and then again as ours; only what
    a core NATS subscription uses is set.
    """

    attempt = 1  #: core NATS does not count deliveries
    #: a delivery is itself, as every bus's message is (``Msg`` compares field by field)
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __init__(self, _client: Client, subject: str = "", reply: str = "", data: bytes = b"",
                 headers: dict[str, str] | None = None, _sid: int | None = None) -> None:
        self._client = _client
        self.subject = subject
        self.reply = reply
        self.data = self.body = data
        self.headers = headers
        self._sid = _sid

    ack = no_ack  #: core NATS does not track deliveries

    async def nack(self, delay: float = 0) -> None:
        """No-op: core NATS cannot redeliver (at-most-once)."""

    async def in_progress(self) -> None:
        """No-op: there is no lease to extend."""


class NatsConsumer(BusPart):
    """Subscribes to ``topic`` in the queue group ``channel``.

    nats-py puts each message of a subscription in an asyncio queue and, with a callback,
    runs a task that takes it out and calls the callback, which would hand it on to
    ``msg()``. Instead, the subscription's queue is replaced by ours (``Arrivals``) and the
    client builds our ``NatsMessage`` (its ``msg_class``): nats-py puts each message there
    and ``msg()`` hands it out as it came. No callback task, no asyncio queue, no hand-over
    and no second object per message: about 7,000 of a no-op task's 109,000 instructions.

    That queue and its byte count (``Subscription._pending_queue`` and ``_pending_size``,
    the same since nats-py 2.0) are not nats-py's public API: ``start()`` checks they are
    there, and ``msg_class`` is, and names the nats-py version when not.
    """

    def __init__(self, options: NatsOptions, topic: str, channel: str = "", prefetch: int = 1) -> None:
        self.options = options
        self.topic = topic
        self.channel = channel or topic
        #: unused: core NATS pushes every message; the client buffers up to ``pending_limit``
        self.prefetch = max(1, prefetch)
        self._client: Client | None = None
        self._sub: Subscription | None = None
        self._waiters = Waiters()  # msg() calls waiting, oldest first
        self._arrivals = Arrivals(options.pending_limit, self._waiters)
        self._stopped = False
        self._received = 0

    async def start(self) -> None:
        """Connect and subscribe.

        Raises:
            BusError: the server cannot be reached, or refuses the subscription; or the
                installed nats-py keeps a subscription's messages in another way.
        """
        if self._client is not None or self._stopped:
            return
        self._client = await connect(self.options.connect)
        try:
            if not isinstance(getattr(self._client, "msg_class", None), type):
                raise _unsupported_nats_py()
            self._client.msg_class = NatsMessage
            self._sub = await self._client.subscribe(
                self.topic, queue=self.channel, pending_msgs_limit=self.options.pending_limit,
            )
            self._arrivals.replace_queue_of(self._sub)
            await flush_in_order(self._client)  # the server knows the subscription once start returns
        except (TimeoutError, nats.errors.Error) as err:
            await self._client.close()
            raise BusError(f"cannot subscribe to {self.topic!r} on {self.options.connect.shown}: {err}") from err
        except BusError:
            await self._client.close()
            raise

    async def msg(self) -> NatsMessage | None:
        """The next message; None after ``stop()``.

        Raises:
            BusError: the connection is closed for good (reconnects were exhausted).
        """
        arrived = self._arrivals.messages
        while not self._stopped:
            if arrived:  # first: a message waiting is the hot path
                message = arrived.popleft()
                self._sub._pending_size -= len(message.data)  # type: ignore[union-attr]  # nats-py's byte bound
                if arrived:
                    self._waiters.wake_one()  # pass the baton on
                self._received += 1
                return message
            if self._client is None:
                await self.start()
                continue
            if self._client.is_closed:
                raise BusError(f"the connection to {self.options.connect.shown} is closed")
            await self._waiters.wait(lambda: bool(arrived))
        return None

    def unread(self, message: NatsMessage) -> None:
        """Put a message ``msg()`` handed out, never started, back in front: the next
        ``msg()`` returns it, or ``stop()`` publishes it back with the other held ones (a
        core NATS nack cannot redeliver). What ``task.bus.priority`` does with a message it
        kept and did not hand on."""
        if self._sub is not None:
            self._sub._pending_size += len(message.body)  # msg() takes it off again
        held = self._arrivals.messages
        held.appendleft(message)
        self._received -= 1
        if len(held) == 1:
            self._waiters.wake_one()

    async def stop(self) -> None:
        """Unsubscribe, give held messages back to the subject, close. Idempotent.

        nats-py's drain tells the server and waits a round trip for what the server sent
        before it knew; those and every message held here are published back to the
        subject, so another worker of the channel gets them."""
        if self._stopped:
            return
        self._stopped = True
        self._waiters.wake_all()
        client, self._client = self._client, None
        if client is None:
            return
        held = self._arrivals.messages
        try:
            if self._sub is not None and client.is_connected:
                await self._sub.drain()  # type: ignore[no-untyped-call]
                for msg in held:
                    await client.publish(self.topic, msg.data, headers=msg.headers)
                if held:
                    logger.info("nats: returned %d unhandled messages to %s", len(held), self.topic)
                await flush_in_order(client)
        except (TimeoutError, nats.errors.Error) as err:
            logger.warning("nats: %d unhandled messages of %s are lost: %s", len(held), self.topic, err)
        finally:
            held.clear()
            await client.close()

    def info(self) -> BusInfo:
        return {
            "bus": "nats", "url": self.options.connect.shown, "topic": self.topic,
            "channel": self.channel, "received": self._received, "waiting": len(self._arrivals.messages),
        }

    @property
    def started(self) -> bool:
        """Subscribed (stays True after ``stop()``)."""
        return self._sub is not None

    def health(self) -> str | None:
        """Why messages cannot arrive now (the connection is down), or None."""
        return None if self._stopped else connection_problem(self._client, self.options.connect.shown)


class Arrivals:
    """A subscription's messages as they arrive, in place of nats-py's own asyncio queue.

    Has what nats-py asks of that queue: ``put_nowait`` (``asyncio.QueueFull`` past
    ``maxsize``, which nats-py reports as a slow consumer), ``qsize``, ``empty`` and
    ``join`` (its drain waits there for a callback to finish the messages; here ``stop()``
    gives back what is left itself). A message arriving while none is held wakes one
    waiting ``msg()`` call, which passes the wake-up on while more are held.
    """

    __slots__ = ("maxsize", "messages", "waiters")

    def __init__(self, maxsize: int, waiters: Waiters) -> None:
        self.maxsize = maxsize
        self.messages: deque[NatsMessage] = deque()
        self.waiters = waiters

    def replace_queue_of(self, sub: Subscription) -> None:
        """Take the place of ``sub``'s queue, taking over any message already in it.

        Raises:
            BusError: this nats-py keeps a subscription's messages otherwise.
        """
        queue = getattr(sub, "_pending_queue", None)
        if not isinstance(queue, asyncio.Queue) or not isinstance(getattr(sub, "_pending_size", None), int):
            raise _unsupported_nats_py()
        while not queue.empty():
            self.put_nowait(queue.get_nowait())
        sub._pending_queue = self  # type: ignore[assignment]

    def put_nowait(self, msg: NatsMessage) -> None:
        messages = self.messages
        if len(messages) >= self.maxsize:
            raise asyncio.QueueFull
        messages.append(msg)
        if len(messages) == 1:  # more held: a woken call is running, or none waits
            self.waiters.wake_one()

    def qsize(self) -> int:
        return len(self.messages)

    def empty(self) -> bool:
        return not self.messages

    async def join(self) -> None:
        """Nothing to wait for: ``stop()`` publishes the messages left back itself."""


def _unsupported_nats_py() -> BusError:
    """The error for a nats-py whose client or subscriptions keep messages otherwise."""
    from importlib.metadata import version

    return BusError(
        f"nats-py {version('nats-py')} keeps a subscription's messages in a way taskbus does "
        "not know; install a nats-py taskbus supports: pip install 'nats-py>=2.7,<3'"
    )


def connection_problem(client: Client | None, shown: str) -> str | None:
    """What is wrong with a NATS connection, for ``health()`` (core NATS and JetStream): None
    while it is up, or before it was opened."""
    if client is None or client.is_connected:
        return None
    return f"connection to {shown} {'closed' if client.is_closed else 'down, reconnecting'}"


class NatsProducer(BusPart):
    """Publishes to the subject ``topic``."""

    def __init__(self, options: NatsOptions) -> None:
        self.options = options
        self._client: Client | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._stopped = False
        self._sent = 0
        self._next_flush: asyncio.Future[None] | None = None  # sends waiting for a flush
        self._flusher: asyncio.Task[None] | None = None
        #: subjects checked once here, so nats-py does not check each publish again
        self._subjects: set[str] = set()

    async def start(self) -> None:
        """Connect.

        Raises:
            BusError: the server cannot be reached.
            BusClosedError: called after ``stop()``.
        """
        if self._stopped:
            raise BusClosedError(f"nats producer for {self.options.connect.shown} used after stop()")
        async with self._starting:
            if self._client is None:
                self._client = await connect(self.options.connect, checks_subjects=False)

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Publish ``body``; with ``flush`` also wait until the server has read it.

        ``key`` is ignored. Nobody confirms delivery to a worker: core NATS drops a message
        no subscriber takes.

        Raises:
            BusError: the body is over the server's max_payload, the topic is not a valid
                subject, or the server did not confirm in time.
            BusClosedError: called after ``stop()``.
        """
        client = self._client
        if client is None:
            await self.start()
            client = self._client
            assert client is not None
        if topic not in self._subjects:
            check_subject(topic)
            if len(self._subjects) >= _SUBJECTS_KEPT:
                self._subjects.clear()
            self._subjects.add(topic)
        try:
            await client.publish(topic, body)
            if self.options.flush:
                await asyncio.shield(self._flushed(client))
        except nats.errors.ConnectionClosedError as err:
            if self._stopped:
                raise BusClosedError(f"nats producer for {self.options.connect.shown} used after stop()") from err
            raise BusError(f"cannot publish to {topic!r}: the connection is closed") from err
        except (TimeoutError, nats.errors.Error) as err:
            raise BusError(f"cannot publish to {topic!r} on {self.options.connect.shown}: {err or type(err).__name__}") from err
        self._sent += 1

    def _flushed(self, client: Client) -> asyncio.Future[None]:
        """A future that resolves once the server has read everything published so far.

        Concurrent sends share one PING/PONG round trip instead of one each: a flush that
        is already under way may not cover the newest publish, so those join the next one.
        """
        batch = self._next_flush
        if batch is None:
            batch = self._next_flush = asyncio.get_running_loop().create_future()
            batch.add_done_callback(_retrieve)
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_loop(client), name="nats-flush")
        return batch

    async def _flush_loop(self, client: Client) -> None:
        while self._next_flush is not None:
            batch, self._next_flush = self._next_flush, None
            try:
                await flush_in_order(client)
            except (TimeoutError, nats.errors.Error) as err:
                batch.set_exception(err)
            except asyncio.CancelledError:
                batch.set_exception(BusClosedError("nats producer stopped before the server confirmed"))
                raise
            else:
                batch.set_result(None)

    async def stop(self) -> None:
        """Flush and close. Idempotent."""
        self._stopped = True
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            try:
                await flush_in_order(client)
            except (TimeoutError, nats.errors.Error) as err:
                logger.warning("nats: flush on stop failed: %s", err)
            await client.close()

    def info(self) -> BusInfo:
        return {"bus": "nats", "url": self.options.connect.shown, "sent": self._sent}


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a flush failure as seen even when every send waiting for it was cancelled."""
    if not future.cancelled():
        future.exception()


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> NatsConsumer:
    """``nats://h:p``: a queue-group consumer of ``topic`` (no I/O until started)."""
    return NatsConsumer(NatsOptions.from_url(url, credentials), topic, channel, prefetch)


def open_producer(url: str, *, credentials: Credentials) -> NatsProducer:
    """``nats://h:p``: a producer (no I/O until started)."""
    return NatsProducer(NatsOptions.from_url(url, credentials))
