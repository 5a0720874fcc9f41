"""The JetStream producer: every publish confirmed, retried with its own message id; delayed
messages through JetStream message schedules (``send_at``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from task import rfc3339
from task.backoff import Backoff
from task.bus.base import BusInfo, BusPart
from task.bus.delaying import NativeDelayUnavailable
from task.bus.jetstream_options import JetStreamOptions, ensure_stream, stream_name
from task.bus.jetstream_puback import PubAcks
from task.bus.nats_connect import connect
from task.duration import format_duration
from task.errors import BusClosedError, BusError

__all__ = ["JetStreamProducer"]

logger = logging.getLogger(__name__)

#: Waits between publishes the server did not confirm.
PUBLISH_RETRY = Backoff(first=0.1, cap=1.0)
#: The subject token under a topic where delayed messages wait: ``<topic>.taskbus-at.<id>``.
SCHEDULE_TOKEN = "taskbus-at"
#: Seconds short of the stream's max_age beyond which a delay is refused (it would expire).
SCHEDULE_MARGIN = 60.0
_PUBLISH_ERRORS = (TimeoutError, nats.errors.Error, nats.js.errors.Error)


class JetStreamProducer(BusPart):
    """Publishes to JetStream and waits for each publish to be stored."""

    def __init__(self, options: JetStreamOptions) -> None:
        self.options = options
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks = PubAcks(options.publish_timeout)
        self._starting = asyncio.Lock()
        self._streams: dict[str, asyncio.Future[None]] = {}
        #: message ids: a random prefix per producer and a sequence (nats-py's NUID costs a
        #: few µs per id in Python, on every done task)
        self._id_prefix = secrets.token_hex(8)
        self._id_seq = itertools.count()
        self._stopped = False
        self._sent = 0
        self._retries = 0
        self._delayed = 0
        #: topics whose stream allows message schedules, with the stream's max_age (seconds)
        self._schedules: dict[str, float] = {}

    async def start(self) -> None:
        """Connect.

        Raises:
            BusError: the server cannot be reached.
            BusClosedError: called after ``stop()``.
        """
        if self._stopped:
            raise BusClosedError(f"jetstream producer for {self.options.connect.shown} used after stop()")
        async with self._starting:
            if self._client is None:
                client = await connect(self.options.connect)
                try:
                    await self._acks.start(client)
                except (nats.errors.Error, TimeoutError) as err:
                    await client.close()
                    raise BusError(f"cannot publish on {self.options.connect.shown}: {err or type(err).__name__}") from err
                self._js = client.jetstream(timeout=self.options.publish_timeout)
                self._client = client

    async def _stream_ready(self, js: JetStreamContext, topic: str) -> None:
        """Ensure the stream once per topic, however many sends wait for it at once."""
        ready = self._streams.get(topic)
        if ready is None:
            ready = self._streams[topic] = asyncio.ensure_future(self._ensure(js, topic))
        try:
            await asyncio.shield(ready)
        except BusError:
            self._streams.pop(topic, None)
            raise

    async def _ensure(self, js: JetStreamContext, topic: str) -> None:
        await ensure_stream(js, topic, self.options)

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Publish ``body`` to ``topic`` and wait until JetStream has stored it.

        A publish that is not confirmed within ``publish_timeout`` is retried with the same
        message id (so the stream keeps one copy; with ``dedupe=false`` there is no id and a
        retry may store a second copy), up to ``publish_retries`` times. ``key`` is ignored.

        Raises:
            BusError: not confirmed after every retry, or refused (too big, no permission).
            BusClosedError: called after ``stop()``.
        """
        ready = self._streams.get(topic)
        if ready is None or not ready.done():
            await self._ready(topic)
        headers = {"Nats-Msg-Id": self._message_id()} if self.options.dedupe else None
        client = self._client
        if client is None or self._stopped:
            raise BusClosedError(f"jetstream producer for {self.options.connect.shown} used after stop()")
        # the first try inline (a coroutine less per done task); _publish retries
        acks = self._acks
        reply, confirmed = acks.expect()
        try:
            await client.publish(topic, body, reply=reply, headers=headers)
            await confirmed
        except _PUBLISH_ERRORS as err:
            acks.forget(reply)
            await self._failed(err, topic, topic, 0)
            await self._publish(topic, topic, body, headers, first=1, last=err)
        except asyncio.CancelledError:
            acks.forget(reply)  # nobody waits for its PubAck now
            raise
        self._sent += 1

    async def send_at(self, topic: str, body: bytes, at: datetime) -> None:
        """Publish ``body`` so JetStream delivers it to ``topic`` at ``at`` (message schedules,
        nats-server 2.12 and later): stored now, confirmed like ``send``.

        The message waits on its own subject ``<topic>.taskbus-at.<id>`` of the topic's
        stream (which workers, filtering on the topic, never read) with ``Nats-Schedule:
        @at <time>``; at that time the server publishes it to ``topic`` and removes it. The
        first delayed send to a topic allows schedules on its stream and adds that subject.

        Raises:
            NativeDelayUnavailable: the server has no message schedules, or ``at`` is
                beyond the stream's ``max_age`` (the message would expire first).
            BusError: not confirmed after every retry, or refused.
            BusClosedError: called after ``stop()``.
        """
        js = await self._ready(topic)
        max_age = await self._schedules_ready(js, topic)
        wait = (at - datetime.now(UTC)).total_seconds()
        if max_age and wait > max_age - SCHEDULE_MARGIN:
            raise NativeDelayUnavailable(
                f"stream {stream_name(topic)} keeps messages {format_duration(max_age)}, "
                f"less than the delay of {format_duration(wait)}")
        nuid = self._message_id()
        headers = {"Nats-Msg-Id": nuid, "Nats-Schedule": "@at " + rfc3339.format_utc(at),
                   "Nats-Schedule-Target": topic}
        await self._publish(topic, f"{topic}.{SCHEDULE_TOKEN}.{nuid}", body, headers)
        self._sent += 1
        self._delayed += 1

    def _message_id(self) -> str:
        """A new ``Nats-Msg-Id``: unique within the server's duplicate window across every
        producer (64 random bits per producer), the same for each retry of one publish."""
        return f"{self._id_prefix}{next(self._id_seq):x}"

    async def _ready(self, topic: str) -> JetStreamContext:
        js = self._js
        if js is None:
            await self.start()
            js = self._js
            assert js is not None
        if topic not in self._streams or not self._streams[topic].done():
            await self._stream_ready(js, topic)
        return js

    async def _schedules_ready(self, js: JetStreamContext, topic: str) -> float:
        """Allow schedules on the topic's stream once; its ``max_age`` in seconds (0: none)."""
        known = self._schedules.get(topic)
        if known is not None:
            return known
        name = stream_name(topic)
        subject = f"{topic}.{SCHEDULE_TOKEN}.>"
        try:
            config = (await js.stream_info(name)).config
            if not config.allow_msg_schedules or subject not in (config.subjects or []):
                config = config.evolve(allow_msg_schedules=True,
                                       subjects=sorted({*(config.subjects or []), subject}))
                config = (await js.update_stream(config)).config
        except nats.js.errors.BadRequestError as err:
            raise NativeDelayUnavailable(
                f"{self.options.connect.shown} refused message schedules on stream {name} "
                f"(nats-server 2.12 or later has them): {err}") from err
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as err:
            raise BusError(f"cannot set up delayed messages on stream {name}: {err or type(err).__name__}") from err
        if not config.allow_msg_schedules:  # an older server ignores the field
            raise NativeDelayUnavailable(
                f"{self.options.connect.shown} has no message schedules (nats-server 2.12 or later has them)")
        self._schedules[topic] = max_age = float(config.max_age or 0)
        return max_age

    async def _publish(self, topic: str, subject: str, body: bytes, headers: dict[str, str] | None,
                       first: int = 0, last: BaseException | None = None) -> None:
        """Publish to ``subject`` of ``topic``'s stream until stored, retrying with the same
        headers (so the same message id); ``first`` tries were made already, the latest
        failing with ``last``."""
        for attempt in range(first, self.options.publish_retries + 1):
            client = self._client
            if client is None or self._stopped:
                raise BusClosedError(f"jetstream producer for {self.options.connect.shown} used after stop()")
            reply, confirmed = self._acks.expect()
            try:
                await client.publish(subject, body, reply=reply, headers=headers)
                await confirmed
                return
            except _PUBLISH_ERRORS as err:
                self._acks.forget(reply)
                last = err
                await self._failed(err, topic, subject, attempt)
            except asyncio.CancelledError:
                self._acks.forget(reply)
                raise
        raise BusError(
            f"JetStream did not confirm a message for {topic!r} after {self.options.publish_retries + 1} tries: {last or 'timeout'}"
        )

    async def _failed(self, err: BaseException, topic: str, subject: str, attempt: int) -> None:
        """After a failed try: get ready for the next one, or raise when none may follow.

        Raises:
            BusError: the connection is closed, or JetStream refused the message.
        """
        if isinstance(err, nats.js.errors.NoStreamResponseError):
            # the stream went away (deleted, memory storage restarted)
            self._streams.pop(topic, None)
            self._schedules.pop(topic, None)
            js = self._js
            if js is None:
                raise BusClosedError(f"jetstream producer for {self.options.connect.shown} used after stop()") from err
            await self._stream_ready(js, topic)
            if subject != topic:
                await self._schedules_ready(js, topic)
        elif isinstance(err, (TimeoutError, nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError)):
            self._retries += 1
            logger.warning("jetstream: publish to %r not confirmed (try %d): %s", topic, attempt + 1, err or "timeout")
            await asyncio.sleep(PUBLISH_RETRY.delay(attempt))
        elif isinstance(err, nats.errors.ConnectionClosedError):
            raise BusError(f"cannot publish to {topic!r}: the connection to {self.options.connect.shown} is closed") from err
        else:
            raise BusError(f"JetStream refused a message for {topic!r}: {err}") from err

    async def stop(self) -> None:
        """Close. Every ``send`` that returned was confirmed, so nothing is pending. Idempotent."""
        self._stopped = True
        client, self._client, self._js = self._client, None, None
        for ready in self._streams.values():
            ready.cancel()
        await self._acks.stop()
        if client is not None:
            await client.close()

    def info(self) -> BusInfo:
        return {"bus": "jetstream", "url": self.options.connect.shown, "sent": self._sent,
                "retries": self._retries, "delayed": self._delayed}
