"""The JetStream producer: every publish confirmed, retried with its own message id."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.nuid import NUID

from task.backoff import Backoff
from task.bus.base import BusInfo, BusPart
from task.bus.jetstream_options import JetStreamOptions, ensure_stream
from task.bus.nats_connect import connect
from task.errors import BusClosedError, BusError

__all__ = ["JetStreamProducer"]

logger = logging.getLogger(__name__)

#: Waits between publishes the server did not confirm.
PUBLISH_RETRY = Backoff(first=0.1, cap=1.0)


class JetStreamProducer(BusPart):
    """Publishes to JetStream and waits for each publish to be stored."""

    def __init__(self, options: JetStreamOptions) -> None:
        self.options = options
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._starting = asyncio.Lock()
        self._streams: dict[str, asyncio.Future[None]] = {}
        self._nuid = NUID()
        self._stopped = False
        self._sent = 0
        self._retries = 0

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
                self._client = await connect(self.options.connect)
                self._js = self._client.jetstream(timeout=self.options.publish_timeout)

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
        message id (so the stream keeps one copy), up to ``publish_retries`` times. ``key``
        is ignored.

        Raises:
            BusError: not confirmed after every retry, or refused (too big, no permission).
            BusClosedError: called after ``stop()``.
        """
        js = self._js
        if js is None:
            await self.start()
            js = self._js
            assert js is not None
        if topic not in self._streams or not self._streams[topic].done():
            await self._stream_ready(js, topic)
        headers = {"Nats-Msg-Id": self._nuid.next().decode()}
        last: BaseException | None = None
        for attempt in range(self.options.publish_retries + 1):
            if self._stopped:
                raise BusClosedError(f"jetstream producer for {self.options.connect.shown} used after stop()")
            try:
                await js.publish(topic, body, headers=headers)
                self._sent += 1
                return
            except nats.js.errors.NoStreamResponseError as err:
                last = err  # the stream went away (deleted, memory storage restarted)
                self._streams.pop(topic, None)
                await self._stream_ready(js, topic)
            except (TimeoutError, nats.errors.TimeoutError, nats.errors.ConnectionReconnectingError) as err:
                last = err
                self._retries += 1
                logger.warning("jetstream: publish to %r not confirmed (try %d): %s", topic, attempt + 1, err or "timeout")
                await asyncio.sleep(PUBLISH_RETRY.delay(attempt))
            except nats.errors.ConnectionClosedError as err:
                raise BusError(f"cannot publish to {topic!r}: the connection to {self.options.connect.shown} is closed") from err
            except (nats.errors.Error, nats.js.errors.Error) as err:
                raise BusError(f"JetStream refused a message for {topic!r}: {err}") from err
        raise BusError(
            f"JetStream did not confirm a message for {topic!r} after {self.options.publish_retries + 1} tries: {last or 'timeout'}"
        )

    async def stop(self) -> None:
        """Close. Every ``send`` that returned was confirmed, so nothing is pending. Idempotent."""
        self._stopped = True
        client, self._client, self._js = self._client, None, None
        for ready in self._streams.values():
            ready.cancel()
        if client is not None:
            await client.close()

    def info(self) -> BusInfo:
        return {"bus": "jetstream", "url": self.options.connect.shown, "sent": self._sent, "retries": self._retries}
