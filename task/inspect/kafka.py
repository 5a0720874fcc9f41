"""Inspecting Kafka: a group's lag from its committed offsets, peeking without committing.

A channel is a consumer group. What waits is, per partition, the true end offset (see
``kafka_reader``) minus the group's committed offset (where it committed none, the URL's
``offset_reset`` says where it would start). Kafka does not count deliveries: tasks a worker
holds stay behind the committed offset, so they count as waiting and ``in_flight`` and
``redelivered`` are unknown. The oldest waiting task's age is the time of the record at the
committed offset. Peeking reads from the committed offsets with a reader that never commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from task.bus.kafka_options import KafkaOptions, unreachable
from task.credentials import Credentials
from task.inspect.base import TopicStats
from task.inspect.kafka_reader import KafkaReader, Record

__all__ = ["KafkaInspector", "open_inspector"]

_HELD = "Kafka does not count tasks in flight: tasks a worker holds count as waiting until committed"


class KafkaInspector:
    """Reads topics, groups and offsets; never commits or joins a group."""

    def __init__(self, options: KafkaOptions, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self._clock = clock  # seconds since the epoch, as record timestamps are

    async def _groups(self) -> list[str]:
        admin = AIOKafkaAdminClient(**self.options.client_args())
        try:
            await admin.start()
            return sorted(str(g[0]) for g in await admin.list_consumer_groups())
        except KafkaError as err:
            raise unreachable(self.options, err) from err
        finally:
            await admin.close()

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        """Every topic, one row per group that committed offsets of it (one row with the
        channel empty when no group did)."""
        async with KafkaReader(self.options) as reader:
            names = sorted(t for t in await reader.topics() if not prefix or t.startswith(prefix))
            parts = {t: await reader.partitions(t) for t in names}
            bounds = {t: await reader.bounds(parts[t]) for t in names}
        readers: dict[str, list[tuple[str, dict[TopicPartition, int | None]]]] = {t: [] for t in names}
        for group in await self._groups():
            async with KafkaReader(self.options, group) as reader:
                for t in names:
                    committed = await reader.committed(parts[t])
                    if any(offset is not None for offset in committed.values()):
                        readers[t].append((group, committed))
        rows: list[TopicStats] = []
        for t in names:
            if not readers[t]:
                starts = {tp: begin for tp, (begin, _) in bounds[t].items()}
                rows.append(await self._stats(t, "", bounds[t], starts))
                rows[-1].notes.append("no group has committed offsets of this topic yet")
            for group, committed in readers[t]:
                rows.append(await self._stats(t, group, bounds[t], self._starts(bounds[t], committed)))
        return rows

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        group = channel or topic
        async with KafkaReader(self.options, group) as reader:
            parts = await reader.partitions(topic)
            if not parts:
                return TopicStats(topic, group, waiting=0, notes=[f"no topic {topic!r} yet: nothing was sent"])
            bounds = await reader.bounds(parts)
            starts = self._starts(bounds, await reader.committed(parts))
        return await self._stats(topic, group, bounds, starts)

    def _starts(
        self, bounds: dict[TopicPartition, tuple[int, int]], committed: dict[TopicPartition, int | None]
    ) -> dict[TopicPartition, int]:
        """Where the group goes on: its commit, else where ``offset_reset`` puts a new group."""
        starts = {}
        for tp, (begin, end) in bounds.items():
            offset = committed.get(tp)
            if offset is None:
                offset = begin if self.options.offset_reset == "earliest" else end
            starts[tp] = min(max(offset, begin), end)
        return starts

    async def _stats(
        self, topic: str, group: str, bounds: dict[TopicPartition, tuple[int, int]],
        starts: dict[TopicPartition, int],
    ) -> TopicStats:
        ends = {tp: end for tp, (_, end) in bounds.items()}
        waiting = sum(ends[tp] - start for tp, start in starts.items())
        oldest = None
        if waiting:
            async with KafkaReader(self.options) as reader:
                firsts = await reader.read(starts, ends, 1)
            if firsts:
                oldest = max(0.0, self._clock() - min(r.timestamp_ms for r in firsts) / 1000)
        return TopicStats(topic, group, waiting=waiting, oldest_age_seconds=oldest,
                          notes=[_HELD] if waiting else [])

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        """The next ``n`` tasks the group ``channel`` would read, oldest first across partitions."""
        async with KafkaReader(self.options, channel or topic) as reader:
            parts = await reader.partitions(topic)
            bounds = await reader.bounds(parts)
            starts = self._starts(bounds, await reader.committed(parts))
            ends = {tp: end for tp, (_, end) in bounds.items()}
            records: list[Record] = await reader.read(starts, ends, n)
        records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
        return [r.value for r in records[: max(0, n)]]

    async def close(self) -> None:
        """Each call opens and closes its own clients."""


def open_inspector(url: str, *, credentials: Credentials) -> KafkaInspector:
    """``kafka://h:p``: connects per call.

    Raises:
        ConfigError: a malformed URL or option.
    """
    return KafkaInspector(KafkaOptions.from_url(url, credentials))
