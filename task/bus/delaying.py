"""An optional producer capability: hold a message in the broker until a given time.

Some brokers keep a message back themselves (NSQ ``DPUB``, JetStream message schedules);
where they do, a delayed task needs no ledger. ``task.delayed`` checks a producer with
``isinstance(producer, DelayingProducer)`` and falls back to the ledger's schedule otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from task.errors import BusError

__all__ = ["DelayingProducer", "NativeDelayUnavailable"]


class NativeDelayUnavailable(BusError):
    """Raised by ``send_at`` when the broker cannot hold this message until then (longer than
    it keeps messages or allows a delay, or the server has no message scheduling); nothing
    was sent, so the caller may hold the task in the ledger instead."""


@runtime_checkable
class DelayingProducer(Protocol):
    """A producer whose broker delivers a message no earlier than a given time."""

    async def send_at(self, topic: str, body: bytes, at: datetime) -> None:
        """Send ``body`` to ``topic``, to be delivered to consumers at ``at`` (aware) or later.

        Returns once the broker has accepted (and, where it confirms, stored) the message.
        A time in the past delivers at once.

        Raises:
            NativeDelayUnavailable: the broker cannot delay this message (too long, or not
                supported by this server); nothing was sent.
            BusError: the broker refused the message or could not be reached.
            BusClosedError: called after ``stop()``.
        """
