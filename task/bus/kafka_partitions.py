"""The partitions of a topic as an aiokafka client's metadata knows them, read once a second.

aiokafka's ``cluster.partitions_for_topic`` builds a new set on every call; a producer that
picks the partition of each record itself, and a consumer asked how many partitions its
topic has, read it once a second instead. Partitions are added rarely, and aiokafka itself
refreshes its metadata only every few minutes unless a send fails.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TTL", "PartitionLists"]

#: seconds a topic's partition list is used before the client's metadata is read again
TTL = 1.0


class PartitionLists:
    """Sorted partition lists of the topics an aiokafka ``client`` has metadata for."""

    __slots__ = ("_client", "_lists")

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lists: dict[str, tuple[float, list[int]]] = {}

    def of(self, topic: str) -> list[int] | None:
        """The partitions of ``topic``, sorted; None while the metadata does not know it."""
        now = time.monotonic()
        cached = self._lists.get(topic)
        if cached is not None and now - cached[0] < TTL:
            return cached[1]
        # the producer's and the consumer's cluster metadata (a fake client may have none)
        cluster = getattr(getattr(self._client, "client", None) or getattr(self._client, "_client", None), "cluster", None)
        known = cluster.partitions_for_topic(topic) if cluster is not None else None
        if not known:
            return None
        partitions = sorted(known)
        self._lists[topic] = now, partitions
        return partitions
