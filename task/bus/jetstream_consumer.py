"""The JetStream consumer: a durable pull consumer per channel, prefetch-bounded.

Messages are pulled with our own pull requests on one inbox rather than nats-py's
``fetch()``, which waits for a whole batch: we keep at most ``prefetch`` messages held
(waiting for ``msg()`` or handed out and not settled) plus asked for, and ask again once a
quarter of that is free, so a worker never holds more than its share and never idles
while the stream has work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from task.backoff import Backoff
from task.bus.base import BusInfo, BusPart
from task.bus.jetstream_options import JetStreamOptions, dead_letter_record, ensure_stream
from task.bus.jetstream_producer import JetStreamProducer
from task.bus.nats import connection_problem
from task.bus.nats_connect import connect, flush_in_order
from task.bus.waiters import Waiters
from task.errors import BusError

__all__ = ["JetStreamConsumer", "JetStreamMessage"]

logger = logging.getLogger(__name__)

#: Waits between failed pulls while the server is away.
RECONNECT = Backoff(first=0.2, cap=5.0)

#: seconds a pull request waits on the server before it expires (and is renewed)
PULL_EXPIRES = 5.0
#: seconds a ``from_end`` consumer may go unused before the server removes it
FROM_END_INACTIVE = 60.0
#: extra seconds before a request whose expiry notice never came is forgotten
_GRACE = 2.0
_NOT_DURABLE = re.compile(r"[^A-Za-z0-9_-]")
_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


class JetStreamMessage:
    """One delivery from JetStream; settle it once with ack, nack or (on its own) term."""

    __slots__ = ("_consumer", "_msg", "_settled", "attempt", "body")

    def __init__(self, msg: Msg, attempt: int, consumer: JetStreamConsumer) -> None:
        self.body = msg.data
        self.attempt = attempt
        self._msg = msg
        self._consumer = consumer
        self._settled = False

    async def ack(self) -> None:
        """Done: JetStream will not deliver it again. Idempotent.

        Raises:
            BusError: the connection is gone (the message will be delivered again).
        """
        if self._settled:
            return
        self._settled = True
        consumer = self._consumer
        client = consumer._client
        reply = self._msg.reply
        if consumer._stopped or client is None or client.is_closed or not reply:
            await consumer._settle(self._msg, b"+ACK")  # may close, or raise
            return
        # the path of every done task, inline: two coroutines fewer than _settle/_publish
        consumer._release()
        try:
            await client.publish(reply, b"+ACK")
        except _ERRORS as err:
            raise BusError(f"cannot settle a message of {consumer.topic!r}: {err}; it will be delivered again") from err

    async def nack(self, delay: float = 0) -> None:
        """Deliver again after ``delay`` seconds, or dead-letter it if this was its last try.

        Raises:
            BusError: the connection is gone (the message comes back after ack_wait).
        """
        if self._settled:
            return
        self._settled = True
        consumer = self._consumer
        if consumer.is_last_delivery(self.attempt):
            await consumer._give_up(self._msg, self.attempt, "nacked on its last allowed delivery")
            return
        payload = b"-NAK" if delay <= 0 else b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode()
        await consumer._settle(self._msg, payload)

    async def in_progress(self) -> None:
        """Still working: restart the ack-wait clock (+WPI)."""
        if not self._settled:
            await self._consumer._publish(self._msg.reply, b"+WPI")


class JetStreamConsumer(BusPart):
    """Pulls ``topic`` through the durable consumer named after ``channel``.

    With ``from_end`` the consumer delivers only messages stored after ``start()``, the
    server removes it once unused for ``FROM_END_INACTIVE`` seconds, and ``stop()`` deletes
    it: what ``task.Client`` uses, with a unique channel, to follow the done topic.
    """

    def __init__(
        self, options: JetStreamOptions, topic: str, channel: str = "", prefetch: int = 1, *, from_end: bool = False
    ) -> None:
        self.from_end = from_end
        self.options = options
        self.topic = topic
        self.durable = _NOT_DURABLE.sub("_", channel or topic)
        self.prefetch = max(1, prefetch)
        self._refill_at = max(1, self.prefetch // 4)
        self.stream = ""
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: Subscription | None = None
        self._advisories: Subscription | None = None
        self._dead: JetStreamProducer | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._ready: deque[tuple[Msg, int]] = deque()  # (message, delivery count)
        self._held = 0  # received and not settled: waiting in _ready or handed out
        self._requests: deque[list[float]] = deque()  # [forget-at, messages still owed]
        self._requested = 0
        self._wake = asyncio.Event()
        self._waiters = Waiters()  # msg() calls waiting, oldest first
        self._stopped = False
        self._needs_setup = False
        self._received = 0
        self._dead_lettered = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, create the stream and the durable consumer if missing, start pulling.

        Raises:
            BusError: the server cannot be reached or JetStream refused the setup.
        """
        if self._client is not None or self._stopped:
            return
        client = self._client = await connect(self.options.connect, on_reconnect=self._on_reconnect)
        try:
            self._js = client.jetstream()
            await self._setup()
            self._sub = await client.subscribe(client.new_inbox(), cb=self._on_message, pending_msgs_limit=-1)
            if self.options.dead_letter:
                self._dead = JetStreamProducer(self.options)
                await self._dead.start()
                self._advisories = await client.subscribe(
                    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.durable}",
                    queue=self.durable, cb=self._on_max_deliveries,
                )
        except _ERRORS as err:
            await self._close()
            raise BusError(f"cannot consume {self.topic!r} on {self.options.connect.shown}: {err}") from err
        except BaseException:
            await self._close()
            raise
        self._pump_task = asyncio.create_task(self._pump(), name=f"jetstream-pull-{self.topic}")

    async def _setup(self) -> None:
        """The stream and the durable consumer, created or updated to our settings."""
        assert self._js is not None
        self.stream = await ensure_stream(self._js, self.topic, self.options)
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, filter_subject=self.topic,
            ack_wait=self.options.ack_wait, max_deliver=self.options.max_deliver,
            max_ack_pending=max(self.options.max_ack_pending, self.prefetch),
        )
        if self.from_end:
            config.deliver_policy, config.inactive_threshold = DeliverPolicy.NEW, FROM_END_INACTIVE
        try:
            await self._js.add_consumer(self.stream, config)
        except nats.js.errors.APIError as err:
            raise BusError(
                f"JetStream refused the consumer {self.durable!r} on {self.stream}: {err.description}"
            ) from err
        self._needs_setup = False

    async def stop(self) -> None:
        """Stop pulling; give back (NAK) what was fetched but not handed out. Idempotent.

        The connection stays open while handed-out messages are unsettled, so the Launcher
        can still acknowledge tasks that finish after stop; a second ``stop()`` (or leaving
        ``async with``) closes it.
        """
        if self._stopped:
            await self._close()
            return
        self._stopped = True
        if self._pump_task is not None:
            self._pump_task.cancel()
        self._waiters.wake_all()
        client = self._client
        if client is None:
            return
        try:
            if self._sub is not None and client.is_connected:
                await self._sub.drain()  # type: ignore[no-untyped-call]
            returned = len(self._ready)
            while self._ready:
                await self._settle(self._ready.popleft()[0], b"-NAK")
            if returned:
                logger.info("jetstream: returned %d prefetched messages of %r", returned, self.topic)
        except (BusError, *_ERRORS) as err:
            logger.warning("jetstream: prefetched messages of %r come back after ack_wait: %s", self.topic, err)
        if self._held <= 0:
            await self._close()

    async def __aexit__(self, *exc: object) -> None:
        """Leaving ``async with`` closes at once: messages not settled by then come back
        after ``ack_wait``."""
        await self.stop()
        await self._close()

    async def _close(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
            self._pump_task = None
        dead, self._dead = self._dead, None
        if dead is not None:
            await dead.stop()
        client, self._client = self._client, None
        if self.from_end and self._js is not None and client is not None and client.is_connected:
            try:
                await self._js.delete_consumer(self.stream, self.durable)
            except _ERRORS as err:  # the server removes it once inactive anyway
                logger.debug("jetstream: cannot delete consumer %s: %s", self.durable, err)
        if client is not None and not client.is_closed:
            try:
                await flush_in_order(client)  # acks still in the client's buffer
            except _ERRORS as err:
                logger.warning("jetstream: last acks of %r may be lost (redelivered): %s", self.topic, err)
            await client.close()

    # ------------------------------------------------------------------ receiving

    async def msg(self) -> JetStreamMessage | None:
        """The next message; None after ``stop()``.

        Raises:
            BusError: the connection is closed for good, or the setup failed.
        """
        if self._client is None and not self._stopped:
            await self.start()
        while not self._stopped:
            if self._ready:
                msg, attempt = self._ready.popleft()
                self._received += 1
                if self._ready:
                    self._waiters.wake_one()  # pass the baton on
                return JetStreamMessage(msg, attempt, self)
            if self._client is None or self._client.is_closed:
                raise BusError(f"the connection to {self.options.connect.shown} is closed")
            await self._waiters.wait(lambda: bool(self._ready))
        return None

    async def _on_message(self, msg: Msg) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if not status:
            if self._requests:
                self._requests[0][1] -= 1
                self._requested -= 1
                if self._requests[0][1] <= 0:
                    self._requests.popleft()
            self._held += 1
            attempt = _delivery_count(msg.reply)
            if 0 < self.options.max_deliver < attempt:
                await self._give_up(msg, attempt, "delivered more often than max_deliver")
                return
            self._ready.append((msg, attempt))
            self._waiters.wake_one()
            return
        if status == "100":
            return  # idle heartbeat
        # 404/408: a request ended without (all) messages; 409: the server cut it short;
        # 503: nobody answers (the stream or consumer is gone, or JetStream is down)
        if self._requests:
            self._requested -= int(self._requests.popleft()[1])
        description = headers.get("Description", "") if headers else ""
        if status == "503" or "Deleted" in description:
            logger.warning("jetstream: consumer %s of %s is gone (%s %s); recreating", self.durable, self.stream, status, description)
            self._needs_setup = True
        elif status == "409" and "Leadership" not in description:
            logger.debug("jetstream: pull request on %s ended: %s %s", self.stream, status, description)
        self._wake.set()

    async def _on_reconnect(self) -> None:
        """Requests made before the server went away are gone with it: ask anew."""
        self._requests.clear()
        self._requested = 0
        self._wake.set()

    async def _pump(self) -> None:
        """Keep pull requests outstanding for the free part of the prefetch."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopped:
            now = loop.time()
            while self._requests and self._requests[0][0] < now:
                self._requested -= int(self._requests.popleft()[1])
            self._requested = max(0, self._requested)
            client = self._client
            if client is None:
                return
            try:
                if self._needs_setup and client.is_connected:
                    await self._setup()
                free = self.prefetch - self._held - self._requested
                busy = self._held + self._requested
                if client.is_connected and free > 0 and (free >= self._refill_at or busy == 0):
                    await self._request(client, free, now)
                failures = 0
            except (BusError, *_ERRORS) as err:
                delay = RECONNECT.delay(failures)
                failures += 1
                logger.warning("jetstream: cannot pull from %s: %s; retrying in %.1fs", self.stream, err, delay)
                await asyncio.sleep(delay)
                continue
            self._wake.clear()
            until = self._requests[0][0] - loop.time() if self._requests else PULL_EXPIRES
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, until))
            except TimeoutError:
                pass

    async def _request(self, client: Client, batch: int, now: float) -> None:
        assert self._sub is not None
        expires = int(PULL_EXPIRES * 1e9)
        await client.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}",
            json.dumps({"batch": batch, "expires": expires}).encode(),
            reply=self._sub.subject,
        )
        self._requests.append([now + PULL_EXPIRES + _GRACE, batch])
        self._requested += batch

    # ------------------------------------------------------------------ settling

    def is_last_delivery(self, attempt: int) -> bool:
        """True when JetStream will not deliver a message again after this ``attempt``."""
        return self.options.max_deliver > 0 and attempt >= self.options.max_deliver

    async def _publish(self, subject: str | None, payload: bytes) -> None:
        client = self._client
        if client is None or client.is_closed or not subject:
            raise BusError(f"cannot settle a message of {self.topic!r}: the consumer is closed; it will be delivered again")
        try:
            await client.publish(subject, payload)
        except _ERRORS as err:
            raise BusError(f"cannot settle a message of {self.topic!r}: {err}; it will be delivered again") from err

    def _release(self) -> None:
        """One held message settled: ask for more once enough of the prefetch is free."""
        self._held -= 1
        if not self._stopped and self.prefetch - self._held - self._requested >= self._refill_at:
            self._wake.set()

    async def _settle(self, msg: Msg, payload: bytes) -> None:
        self._release()
        try:
            await self._publish(msg.reply, payload)
        finally:
            if self._stopped and self._held <= 0 and not self._ready:
                await self._close()

    async def _give_up(self, msg: Msg, attempts: int, reason: str) -> None:
        """Dead-letter (when configured) and terminate a message that will not be retried."""
        if self._dead is None or not self.options.dead_letter:
            logger.warning(
                "jetstream: a message of %r failed %d deliveries and is left in %s; set "
                "dead_letter=<topic> in the bus URL to keep such messages", self.topic, attempts, self.stream,
            )
            await self._settle(msg, b"-NAK")
            return
        try:
            await self._dead.send(self.options.dead_letter, dead_letter_record(msg.data, reason, self.topic, attempts))
        except BusError:
            await self._settle(msg, b"-NAK")  # not recorded: let JetStream keep it
            raise
        self._dead_lettered += 1
        await self._settle(msg, b"+TERM")

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        """The server gave up on a message whose last delivery was never settled."""
        try:
            event = json.loads(advisory.data)
            assert self._js is not None and self._dead is not None and self.options.dead_letter
            stored = await self._js.get_msg(self.stream, int(event["stream_seq"]))
            record = dead_letter_record(stored.data or b"", "max deliveries reached", self.topic, int(event.get("deliveries", 0)))
            await self._dead.send(self.options.dead_letter, record)
            self._dead_lettered += 1
        except (BusError, KeyError, ValueError, AssertionError, *_ERRORS) as err:
            logger.error("jetstream: cannot dead-letter a message of %r past max deliveries: %s", self.topic, err)

    def info(self) -> BusInfo:
        return {
            "bus": "jetstream", "url": self.options.connect.shown, "topic": self.topic,
            "stream": self.stream, "consumer": self.durable, "received": self._received,
            "held": self._held, "dead_lettered": self._dead_lettered,
        }

    @property
    def started(self) -> bool:
        """Pulling (stays True after ``stop()``)."""
        return self._sub is not None

    def health(self) -> str | None:
        """Why messages cannot arrive now (the connection is down), or None."""
        return None if self._stopped else connection_problem(self._client, self.options.connect.shown)


def _delivery_count(reply: str) -> int:
    """The delivery count in a JetStream ack subject, without nats-py's full metadata parse.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` (9 tokens) or,
    with a domain and account hash, ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>...``.
    """
    tokens = reply.split(".")
    try:
        return int(tokens[4] if len(tokens) == 9 else tokens[6])
    except (IndexError, ValueError):
        return 1
