"""Inspecting JetStream: stream and consumer info, and peeking by sequence.

Each topic lives in its stream ``TASK_<TOPIC>`` and each channel is a durable consumer (see
``task.bus.jetstream``). The consumer's own counters are the backlog: ``num_pending`` (not
yet delivered) waits, ``num_ack_pending`` is in flight, ``num_redelivered`` was delivered more
than once. Peeking reads messages by sequence from the consumer's ack floor with the stream's
message-get API, which no consumer sees: nothing is delivered, acknowledged or moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ConsumerInfo, RawStreamMsg, StreamInfo
from nats.js.manager import JetStreamManager

from task.bus.jetstream import JetStreamConsumer, JetStreamOptions, stream_name
from task.bus.nats_connect import connect
from task.credentials import Credentials
from task.errors import BusError
from task.inspect.age import age_seconds, utcnow
from task.inspect.base import TopicStats

__all__ = ["JetStreamInspector", "open_inspector"]

logger = logging.getLogger(__name__)


class JetStreamInspector:
    """Reads stream and consumer info of ``TASK_*`` streams; creates nothing."""

    def __init__(self, options: JetStreamOptions, now: Callable[[], datetime] = utcnow) -> None:
        self.options = options
        self._now = now
        self._client: Client | None = None
        self._jsm: JetStreamManager | None = None

    async def _manager(self) -> JetStreamManager:
        if self._jsm is None:
            self._client = await connect(self.options.connect)
            self._jsm = self._client.jsm()
        return self._jsm

    def _durable(self, topic: str, channel: str) -> str:
        """The durable name a worker of ``channel`` uses (no I/O: the constructor does none)."""
        return JetStreamConsumer(self.options, topic, channel).durable

    def _failed(self, what: str, err: Exception) -> BusError:
        if isinstance(err, nats.errors.NoRespondersError):
            return BusError(f"JetStream is not enabled on {self.options.connect.shown}")
        return BusError(f"cannot read {what} on {self.options.connect.shown}: {err or type(err).__name__}")

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        """Every subject of every ``TASK_*`` stream, one row per durable consumer of it."""
        jsm = await self._manager()
        try:
            streams = await jsm.streams_info()
            rows: list[TopicStats] = []
            for stream in sorted(streams, key=lambda s: s.config.name or ""):
                name = stream.config.name or ""
                if not name.startswith("TASK_"):
                    continue
                consumers = await jsm.consumers_info(name)
                for topic in sorted(stream.config.subjects or []):
                    if prefix and not topic.startswith(prefix):
                        continue
                    rows.extend(await self._rows(jsm, stream, topic, consumers))
            return rows
        except (TimeoutError, nats.errors.Error) as err:
            raise self._failed("the streams", err) from err

    async def _rows(
        self, jsm: JetStreamManager, stream: StreamInfo, topic: str, consumers: list[ConsumerInfo]
    ) -> list[TopicStats]:
        only = len(stream.config.subjects or []) == 1
        mine = [
            c for c in consumers
            if c.config.filter_subject == topic or (only and not c.config.filter_subject)
        ]
        if not mine:
            stats = await self._unread(jsm, stream.config.name or "", topic, "")
            stats.notes.append("no channel reads this topic yet: every message waits")
            return [stats]
        return [
            await self._from_consumer(jsm, topic, c)
            for c in sorted(mine, key=lambda c: c.name or "")
        ]

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        jsm = await self._manager()
        stream, durable = stream_name(topic), self._durable(topic, channel)
        try:
            try:
                info = await jsm.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                stats = await self._unread(jsm, stream, topic, channel)
                stats.notes.append(f"no consumer {durable!r} yet: a worker would read every message")
                return stats
            return await self._from_consumer(jsm, topic, info)
        except (TimeoutError, nats.errors.Error) as err:
            raise self._failed(f"the consumer {durable!r} of {stream}", err) from err

    async def _unread(self, jsm: JetStreamManager, stream: str, topic: str, channel: str) -> TopicStats:
        """A topic nobody reads: every message of its subject in the stream waits."""
        try:
            info = await jsm.stream_info(stream, subjects_filter=topic)
        except nats.js.errors.NotFoundError:
            return TopicStats(topic, channel, waiting=0, in_flight=0, redelivered=0,
                              notes=[f"no stream {stream} yet: nothing was sent to {topic!r}"])
        waiting = (info.state.subjects or {}).get(topic, 0)
        first = await self._next(jsm, stream, topic, 1) if waiting else None
        return TopicStats(topic, channel, waiting=waiting, in_flight=0, redelivered=0,
                          oldest_age_seconds=self._age(first))

    async def _from_consumer(self, jsm: JetStreamManager, topic: str, info: ConsumerInfo) -> TopicStats:
        waiting = info.num_pending or 0
        next_seq = (info.delivered.stream_seq or 0) + 1 if info.delivered else 1
        oldest = await self._next(jsm, info.stream_name, topic, next_seq) if waiting else None
        return TopicStats(
            topic, info.name or "",
            waiting=waiting,
            in_flight=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0,
            oldest_age_seconds=self._age(oldest),
        )

    def _age(self, message: RawStreamMsg | None) -> float | None:
        if message is None or message.time is None:
            return None
        return age_seconds(message.time, self._now())

    @staticmethod
    async def _next(jsm: JetStreamManager, stream: str, topic: str, seq: int) -> RawStreamMsg | None:
        """The first message of ``topic`` at or after ``seq``; None past the end."""
        try:
            return await jsm.get_msg(stream, seq=seq, subject=topic, next=True)
        except nats.js.errors.NotFoundError:
            return None

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        """The next ``n`` messages the channel has not acknowledged, from its ack floor (from
        the start of the stream when it has no consumer yet).

        Messages delivered and not yet acknowledged are shown too: they are not done, and come
        back if their worker gives them back or dies. One acknowledged out of order above the
        floor is shown as well (JetStream tells only the floor): at most ``max_ack_pending``.
        """
        jsm = await self._manager()
        stream, durable = stream_name(topic), self._durable(topic, channel or topic)
        bodies: list[bytes] = []
        try:
            try:
                info = await jsm.consumer_info(stream, durable)
                seq = (info.ack_floor.stream_seq or 0) + 1 if info.ack_floor else 1
            except nats.js.errors.NotFoundError:
                seq = 1
            while len(bodies) < n:
                message = await self._next(jsm, stream, topic, seq)
                if message is None or message.seq is None:
                    break
                bodies.append(message.data or b"")
                seq = message.seq + 1
        except nats.js.errors.NotFoundError:
            return bodies  # no stream: nothing sent yet
        except (TimeoutError, nats.errors.Error) as err:
            raise self._failed(f"messages of {stream}", err) from err
        return bodies

    async def close(self) -> None:
        client, self._client, self._jsm = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()


def open_inspector(url: str, *, credentials: Credentials) -> JetStreamInspector:
    """``jetstream://h:p``: connects on first use.

    Raises:
        ConfigError: a malformed URL or option.
    """
    return JetStreamInspector(JetStreamOptions.from_url(url, credentials))
