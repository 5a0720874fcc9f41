"""The partitions of a topic as an aiokafka client's metadata knows them, read once a second.

aiokafka's ``cluster.partitions_for_topic`` builds a new set on every call; a producer that
picks the partition of each record itself, and a consumer asked how many partitions its
topic has, read it once a second instead. Partitions are added rarely, and aiokafka itself
refreshes its metadata only every few minutes unless a send fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["TTL", "PartitionLists"]

#: seconds a topic's partition list is used before the client's metadata is read again
TTL = 1.0


class PartitionLists:
    """Sorted partition lists of the topics an aiokafka ``client`` has metadata for."""

    __slots__ = ("_client", "_lists")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lists: dict[str, list[int]] = {}

    def of(self, topic: str) -> list[int] | None:
        """The partitions of ``topic``, sorted; None while the metadata does not know it.

        Called in the event loop: a list read from the metadata is dropped ``TTL`` seconds
        later by a timer, so a look-up meanwhile (one per message sent) reads no clock.
        """
        cached = self._lists.get(topic)
        if cached is not None:
            return cached
        # the producer's and the consumer's cluster metadata (a fake client may have none)
        cluster = getattr(getattr(self._client, "client", None) or getattr(self._client, "_client", None), "cluster", None)
        known = cluster.partitions_for_topic(topic) if cluster is not None else None
        if not known:
            return None
        partitions = self._lists[topic] = sorted(known)
        asyncio.get_running_loop().call_later(TTL, self._lists.pop, topic, None)
        return partitions
