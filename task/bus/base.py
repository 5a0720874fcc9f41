"""The three small protocols every bus implements: Consumer, Message, Producer.

Like Go's ``bus.go``: a consumer hands out messages one at a time, a message is acknowledged
once its done task is safely sent, a producer sends bytes to a topic. Everything a bus does
beyond that (partitions, leases, offsets) stays inside its module.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

__all__ = ["BusInfo", "BusPart", "Consumer", "Message", "Producer", "ReportsHealth", "consumer_health", "no_ack"]

#: What ``info()`` returns: plain JSON-able counters and names for ``stats()``.
BusInfo = dict[str, object]


@runtime_checkable
class Message(Protocol):
    """One delivery of one message.

    ``attempt`` is the delivery count (1 on the first delivery, and always 1 where the bus
    does not count). On buses without acknowledgements (core NATS, file, nop) ``ack``,
    ``nack`` and ``in_progress`` are documented no-ops, except where noted per bus.
    """

    body: bytes
    attempt: int

    async def ack(self) -> None:
        """The message is handled: the bus must not deliver it again. Idempotent."""

    async def nack(self, delay: float = 0) -> None:
        """The message was not handled: deliver it again after ``delay`` seconds."""

    async def in_progress(self) -> None:
        """Still working: extend the lease so the bus does not redeliver yet."""


async def no_ack(message: Message) -> None:
    """``ack`` of a message with nothing to acknowledge (core NATS): its class sets
    ``ack = no_ack``, and the Launcher, seeing that, skips the call and its coroutine."""


@runtime_checkable
class Consumer(Protocol):
    """Receives messages of one topic for one channel.

    Built with its ``topic``, ``channel`` and ``prefetch`` (how many messages it may hold
    unacknowledged; the Launcher passes ``max_in_progress``).
    """

    async def start(self) -> None:
        """Connect and subscribe. Idempotent; ``async with consumer:`` calls it.

        Raises:
            BusError: the bus cannot be reached.
        """

    async def msg(self) -> Message | None:
        """The next message. Blocks until one arrives or the consumer stops.

        Returns None when the bus is finished (a file read to its end) or after ``stop()``;
        never blocks after ``stop()``.

        Raises:
            BusError: the bus failed and could not recover.
        """

    async def stop(self) -> None:
        """Stop receiving. Messages fetched but not yet handed out by ``msg()`` go back to the
        bus (``nack(0)``) so another worker gets them. Idempotent."""

    def info(self) -> BusInfo:
        """Counters and names for ``stats()``."""

    async def __aenter__(self) -> Self:
        """``start()``, so ``async with consumer:`` works."""

    async def __aexit__(self, *exc: object) -> None:
        """``stop()``."""


@runtime_checkable
class ReportsHealth(Protocol):
    """Optional consumer capability, checked with ``isinstance``: the state of its connection.

    ``/readyz`` waits for ``started``; ``/healthz`` fails while ``health()`` gives a reason,
    so an orchestrator restarts a worker whose bus is gone. Every bundled consumer has it.
    """

    @property
    def started(self) -> bool:
        """``start()`` has connected and subscribed (it stays True after ``stop()``)."""

    def health(self) -> str | None:
        """None while the consumer can receive (also before ``start()`` and after ``stop()``:
        not started is not broken); otherwise why not, in one line naming the bus."""


def consumer_health(consumer: object) -> tuple[bool, str | None]:
    """``(started, problem)`` of a consumer; one without the capability counts as started
    and healthy: there is nothing to say about it."""
    if isinstance(consumer, ReportsHealth):
        return consumer.started, consumer.health()
    return True, None


@runtime_checkable
class Producer(Protocol):
    """Sends message bodies to topics."""

    async def start(self) -> None:
        """Connect. Idempotent; ``async with producer:`` calls it, ``send`` calls it if needed.

        Raises:
            BusError: the bus cannot be reached.
        """

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Send ``body`` to ``topic`` and return once the bus confirmed it, where it confirms.

        ``key`` is a partition/ordering key where the bus has one (Kafka) and ignored
        elsewhere. A bus that de-duplicates gives every call a fresh id, so sending the same
        task twice delivers it twice.

        Raises:
            BusError: the bus refused the message or could not be reached.
            BusClosedError: called after ``stop()``.
        """

    async def stop(self) -> None:
        """Flush what is pending, then close. Idempotent."""

    def info(self) -> BusInfo:
        """Counters and names for ``stats()``."""

    async def __aenter__(self) -> Self:
        """``start()``, so ``async with producer:`` works."""

    async def __aexit__(self, *exc: object) -> None:
        """``stop()``, flushing what is pending."""


class BusPart:
    """Shared plumbing for consumers and producers: ``async with`` starts and stops them."""

    async def start(self) -> None:
        """Connect; the default does nothing."""

    async def stop(self) -> None:
        """Close; the default does nothing."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
