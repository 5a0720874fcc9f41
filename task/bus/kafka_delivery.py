"""How the delivery of a done task reaches the commit of the Kafka message it answers.

The Launcher sends a message's done task, waits for ``send()`` to return, then acknowledges
the message: "confirmed before acknowledged". Waiting for Kafka's delivery report inside each
``send()`` costs a task switch and a broker round trip per message, where the client batches
deliveries anyway. So when a Kafka consumer hands a message to a task, it marks that task
(a context variable); a Kafka ``send()`` made by that task while the message is unsettled
returns once the record is queued and gives its delivery future to the message. The
message's ``ack()`` then settles it only when every such delivery is confirmed: its offset
is committed after that, never before, and a failed delivery gives the message back.

Every other send (another bus's consumer, a task the worker started itself, a message
already settled) waits for its delivery as before.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, Protocol

__all__ = ["HANDED", "AwaitsDelivery"]


class AwaitsDelivery(Protocol):
    """A handed-out message that can hold the deliveries of sends made on its behalf."""

    def takes_delivery(self) -> bool:
        """True when a send made now, by the running task, counts towards this message."""

    def delivery(self, future: asyncio.Future[Any]) -> None:
        """Hold ``future`` (a queued record's delivery) until the message is settled."""

    def partition_like(self, key: bytes | None, partitions: int) -> int | None:
        """Where the default partitioner puts a record keyed ``key`` on a topic of
        ``partitions`` partitions, when this message tells without hashing the key; else None."""


#: the Kafka message a task was last handed; set by the consumer's ``msg()``
HANDED: ContextVar[AwaitsDelivery | None] = ContextVar("taskbus_kafka_handed", default=None)
