"""An optional producer capability: hold a message in the broker until a given time.

Some brokers keep a message back themselves (NSQ ``DPUB``, JetStream message schedules);
where they do, a delayed task needs no ledger. ``task.delayed`` checks a producer with
``isinstance(producer, DelayingProducer)`` and falls back to the ledger's schedule otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["DelayingProducer"]


@runtime_checkable
class DelayingProducer(Protocol):
    """A producer whose broker delivers a message no earlier than a given time."""

    async def send_at(self, topic: str, body: bytes, at: datetime) -> None:
        """Send ``body`` to ``topic``, to be delivered to consumers at ``at`` (aware) or later.

        Returns once the broker has accepted (and, where it confirms, stored) the message.
        A time in the past delivers at once.

        Raises:
            BusError: the broker refused the message or could not be reached, or cannot hold
                a message that long (the message names the limit).
            BusClosedError: called after ``stop()``.
        """
