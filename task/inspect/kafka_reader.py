"""A Kafka reader that never commits: true end offsets and records read at chosen offsets.

Tansu answers ListOffsets with the base offset of the last record batch plus one, so ten
tasks sent in one batch look like one (checked against Tansu in tests/inspect/test_kafka.py).
The high watermark in a fetch response is right, so the end of a partition is read by
fetching: seek just before the listed end (a record that exists whenever the listed end is
above zero) and take the high watermark the fetch brings back. On a real Kafka broker the
listed end is already right, and this costs one small fetch per partition.

The reader has the group id of the channel it reads for, so it can read that group's
committed offsets, but it never joins the group (partitions are assigned by hand) and
auto-commit is off: the group's members and offsets are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from task.bus.kafka_options import KafkaOptions, unreachable
from task.errors import BusError

__all__ = ["KafkaReader", "Record"]

#: how long one fetch may wait for a record the broker said exists
_FETCH_PATIENCE_MS = 1000
#: fetch rounds before a partition that never answers is an error
_ROUNDS = 10


@dataclass(frozen=True)
class Record:
    """What peeking and ages need from one record."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes


class KafkaReader:
    """Reads ``topic`` for ``group`` without committing or joining; ``async with`` closes it."""

    def __init__(self, options: KafkaOptions, group: str | None = None) -> None:
        self.options = options
        self.group = group
        self._client: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        client = AIOKafkaConsumer(
            group_id=self.group, enable_auto_commit=False, fetch_max_wait_ms=100,
            auto_offset_reset=self.options.offset_reset, **self.options.client_args(),
        )
        try:
            await client.start()
        except KafkaError as err:
            await client.stop()
            raise unreachable(self.options, err) from err
        self._client = client
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.stop()

    @property
    def client(self) -> AIOKafkaConsumer:
        assert self._client is not None, "use KafkaReader in async with"
        return self._client

    async def topics(self) -> set[str]:
        """Every topic the brokers know, Kafka's own (``__consumer_offsets``) left out."""
        return {t for t in await self.client.topics() if not t.startswith("__")}

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """The partitions of ``topic``; none when it does not exist."""
        await self.client.topics()  # refreshes the metadata
        numbers = self.client.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(numbers)]

    async def committed(self, parts: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each partition; None where it committed none."""
        return {tp: await self.client.committed(tp) for tp in parts}

    async def bounds(self, parts: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """``(beginning, end)`` of each partition, the end read by fetching (see above)."""
        if not parts:
            return {}
        client = self.client
        begin = await client.beginning_offsets(parts)
        listed = await client.end_offsets(parts)
        client.assign(parts)
        probe = [tp for tp in parts if listed[tp] > begin[tp]]
        for tp in probe:
            client.seek(tp, listed[tp] - 1)
        ends = {tp: listed[tp] for tp in parts}
        for _ in range(_ROUNDS):
            if all(client.highwater(tp) is not None for tp in probe):
                break
            await client.getmany(*probe, timeout_ms=_FETCH_PATIENCE_MS)
        else:
            raise BusError(f"Kafka at {self.options.url} did not answer a fetch of {parts[0].topic!r}")
        for tp in probe:
            ends[tp] = max(listed[tp], client.highwater(tp))
        return {tp: (begin[tp], ends[tp]) for tp in parts}

    async def read(self, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int], n: int) -> list[Record]:
        """Up to ``n`` records of each partition from ``starts`` (before ``ends``)."""
        client = self.client
        want = {tp: min(n, ends[tp] - start) for tp, start in starts.items() if ends[tp] > start}
        got: dict[TopicPartition, list[Record]] = {tp: [] for tp in want}
        if not want:
            return []
        client.assign(list(want))
        for tp in want:
            client.seek(tp, starts[tp])
        for _ in range(_ROUNDS * max(1, n)):
            todo = [tp for tp in want if len(got[tp]) < want[tp]]
            if not todo:
                break
            batches = await client.getmany(*todo, timeout_ms=_FETCH_PATIENCE_MS)
            for tp, records in batches.items():
                for r in records:
                    if len(got[tp]) < want[tp] and r.offset < ends[tp]:
                        got[tp].append(Record(tp.partition, r.offset, r.timestamp, r.value or b""))
        return [r for records in got.values() for r in records]

