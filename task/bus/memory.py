"""The in-process bus: a public backend for tests and embedding, and the test harness.

``memory:NAME`` uses the process's broker called NAME (tests usually pass their own
``MemoryBroker``). One queue per topic, shared by every consumer of it, whatever its channel.
Messages are acknowledged: ``nack`` redelivers (``attempt`` + 1), an unacknowledged message
comes back when its consumer stops. ``sent`` records everything produced, ``join`` waits
until a topic is drained, and ``inject`` makes the next sends fail on purpose.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from task.bus.base import BusInfo, BusPart
from task.bus.waiters import Waiters
from task.credentials import Credentials
from task.errors import BusClosedError, BusError
from task.url import parse_url

__all__ = ["Fault", "MemoryBroker", "MemoryConsumer", "MemoryMessage", "MemoryProducer"]


class Fault(Enum):
    """Failures a test can inject into a ``MemoryBroker``."""

    SEND_FAILS = "send_fails"  #: the next sends raise BusError
    ACK_FAILS = "ack_fails"  #: the next acks raise BusError; their messages are delivered again


@dataclass
class _Topic:
    ready: deque[MemoryMessage] = field(default_factory=deque)
    #: msg() calls of every consumer of the topic, oldest first
    waiters: Waiters = field(default_factory=Waiters)
    unacked: int = 0
    closed: bool = False
    drained: asyncio.Event | None = None


class MemoryBroker:
    """Topics and their queues, in this process."""

    _named: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._faults: dict[Fault, int] = {}
        #: every (topic, body) sent, in order: what a test asserts on
        self.sent: list[tuple[str, bytes]] = []
        #: topic -> the private queues of ``from_end`` consumers, each getting a copy
        self._copies: dict[str, list[str]] = {}

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The process-wide broker called ``name`` (``memory:NAME`` URLs use it)."""
        broker = cls._named.get(name)
        if broker is None:
            broker = cls._named[name] = cls()
        return broker

    def topic(self, name: str) -> _Topic:
        queue = self._topics.get(name)
        if queue is None:
            queue = self._topics[name] = _Topic()
        return queue

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` operations of that kind fail with BusError."""
        self._faults[fault] = self._faults.get(fault, 0) + times

    def _take_fault(self, fault: Fault) -> bool:
        left = self._faults.get(fault, 0)
        if left:
            self._faults[fault] = left - 1
        return left > 0

    def publish(self, topic: str, body: bytes, attempt: int = 1) -> None:
        """Put ``body`` on ``topic`` now (also what ``send`` does once faults are checked)."""
        self.sent.append((topic, body))
        self._enqueue(topic, MemoryMessage(self, topic, body, attempt))
        for copy in self._copies.get(topic, ()):
            self._enqueue(copy, MemoryMessage(self, copy, body, attempt))

    def _enqueue(self, topic: str, message: MemoryMessage) -> None:
        queue = self.topic(topic)
        queue.ready.append(message)
        queue.waiters.wake_one()

    def close_topic(self, topic: str) -> None:
        """No more messages will come: consumers return None once the topic is drained."""
        queue = self.topic(topic)
        queue.closed = True
        queue.waiters.wake_all()

    def bodies(self, topic: str) -> list[bytes]:
        """Every body sent to ``topic`` so far."""
        return [body for name, body in self.sent if name == topic]

    def pending(self, topic: str) -> int:
        """Messages on ``topic`` not yet acknowledged (waiting or in flight)."""
        queue = self.topic(topic)
        return len(queue.ready) + queue.unacked

    async def join(self, topic: str) -> None:
        """Wait until every message on ``topic`` is acknowledged."""
        queue = self.topic(topic)
        while self.pending(topic):
            queue.drained = queue.drained or asyncio.Event()
            await queue.drained.wait()
            queue.drained = None

    def _settled(self, queue: _Topic) -> None:
        queue.unacked -= 1
        if not queue.ready and not queue.unacked:
            if queue.drained is not None:
                queue.drained.set()
            if queue.closed:
                queue.waiters.wake_all()  # a closed topic is finished: every msg() returns None

    def __iter__(self) -> Iterator[str]:
        return iter(self._topics)


class MemoryMessage:
    """A message handed out by a ``MemoryConsumer``."""

    __slots__ = ("_broker", "_settled", "_topic", "attempt", "body")

    def __init__(self, broker: MemoryBroker, topic: str, body: bytes, attempt: int) -> None:
        self.body = body
        self.attempt = attempt
        self._broker = broker
        self._topic = topic
        self._settled = False

    async def ack(self) -> None:
        """Settle the message. With ``Fault.ACK_FAILS`` injected, raise BusError and deliver the
        message again, as a broker does once the lease of an unacknowledged message runs out."""
        if self._settled:
            return
        if self._broker._take_fault(Fault.ACK_FAILS):
            await self.nack(0)
            raise BusError("injected fault: ack failed")
        self._settled = True
        self._broker._settled(self._broker.topic(self._topic))

    async def nack(self, delay: float = 0) -> None:
        """Redeliver after ``delay`` seconds with ``attempt`` + 1."""
        if self._settled:
            return
        self._settled = True
        again = MemoryMessage(self._broker, self._topic, self.body, self.attempt + 1)
        queue = self._broker.topic(self._topic)
        queue.unacked += 1  # the redelivery is pending while it waits
        self._broker._settled(queue)

        def requeue() -> None:
            queue.unacked -= 1
            self._broker._enqueue(self._topic, again)

        if delay > 0:
            asyncio.get_running_loop().call_later(delay, requeue)
        else:
            requeue()

    async def in_progress(self) -> None:
        """Nothing to extend: memory messages have no lease."""


class MemoryConsumer(BusPart):
    """Takes messages from one topic of a ``MemoryBroker``.

    With ``from_end`` it reads its own copy of every message sent to the topic after
    ``start()``, taking nothing from the topic's other consumers (what ``task.Client`` uses to
    follow the done topic); the copy queue is dropped at ``stop()``.
    """

    def __init__(
        self, broker: MemoryBroker, topic: str, channel: str = "", prefetch: int = 1, *, from_end: bool = False
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.channel = channel or topic
        self.prefetch = prefetch
        self.from_end = from_end
        #: the queue msg() reads: the topic's, or this consumer's copy of it
        self._source = topic
        self._stopped = False
        self._received = 0

    async def start(self) -> None:
        """With ``from_end``, start copying the topic's messages. Idempotent."""
        if self.from_end and self._source == self.topic and not self._stopped:
            self._source = f"{self.topic}#{self.channel}#{id(self)}"
            self.broker._copies.setdefault(self.topic, []).append(self._source)

    async def msg(self) -> MemoryMessage | None:
        """The next message; None once stopped, or when the topic is closed and finished:
        nothing waiting and nothing unsettled (a message in flight may still be nacked)."""
        await self.start()
        queue = self.broker.topic(self._source)
        while not self._stopped:
            if queue.ready:
                message = queue.ready.popleft()
                queue.unacked += 1
                self._received += 1
                if queue.ready:
                    queue.waiters.wake_one()  # pass the baton on
                return message
            if queue.closed and not queue.unacked:
                return None
            await queue.waiters.wait(lambda: bool(queue.ready))
        return None

    async def stop(self) -> None:
        """Stop; every ``msg()`` waiting now returns None. Nothing is held, so nothing is
        returned. (Waiting calls of other consumers of the topic wake and wait again.)"""
        self._stopped = True
        queue = self.broker._topics.get(self._source)
        if queue is not None:
            queue.waiters.wake_all()
        copies = self.broker._copies.get(self.topic, [])
        if self._source in copies:
            copies.remove(self._source)
            self.broker._topics.pop(self._source, None)

    def info(self) -> BusInfo:
        return {"bus": "memory", "topic": self.topic, "channel": self.channel, "received": self._received}

    #: nothing to start: a memory consumer is ready as built (``ReportsHealth``)
    started = True

    def health(self) -> str | None:
        """Always None: the broker lives in this process."""
        return None


class MemoryProducer(BusPart):
    """Sends to a ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self._stopped = False
        self._sent = 0

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Enqueue now; raises BusError when a test injected ``Fault.SEND_FAILS``."""
        if self._stopped:
            raise BusClosedError("memory producer used after stop()")
        if self.broker._take_fault(Fault.SEND_FAILS):
            raise BusError("injected fault: send failed")
        self.broker.publish(topic, bytes(body))
        self._sent += 1

    async def stop(self) -> None:
        self._stopped = True

    def info(self) -> BusInfo:
        return {"bus": "memory", "sent": self._sent}


def _broker_for(url: str) -> MemoryBroker:
    parsed = parse_url(url)
    parsed.check_options(())
    return MemoryBroker.named(parsed.path.strip("/") or "default")


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> MemoryConsumer:
    """``memory:NAME``: a consumer on the process's broker NAME."""
    return MemoryConsumer(_broker_for(url), topic, channel, prefetch)


def open_producer(url: str, *, credentials: Credentials) -> MemoryProducer:
    """``memory:NAME``: a producer on the process's broker NAME."""
    return MemoryProducer(_broker_for(url))
