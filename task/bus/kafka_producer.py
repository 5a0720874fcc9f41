"""The Kafka producer: ``acks=all``, keyed by task id, topics created on first use.

A send made on behalf of a Kafka message being handled returns once the record is queued;
the message's commit waits for its delivery instead (see ``task.bus.kafka_delivery``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, KafkaError  # type: ignore[import-untyped]

from task.bus.base import BusInfo, BusPart
from task.bus.kafka_batches import RecordBatches
from task.bus.kafka_delivery import HANDED
from task.bus.kafka_options import KafkaOptions, ensure_topic, unreachable
from task.bus.kafka_partitions import PartitionLists
from task.errors import BusClosedError, BusError

__all__ = ["KafkaProducer", "murmur2", "partition_for", "start_producer"]

logger = logging.getLogger(__name__)

_M = 0x5BD1E995  # murmur2's mixing constant
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 of ``data``, as aiokafka's, with a quarter of the steps: the
    default partitioner hashes the key of every record sent."""
    length = len(data)
    words = length // 4
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = words * 4
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's default partitioner (murmur2 of the key, as the Java client; a random
    available partition without a key), answered at once for a one-partition topic."""
    if len(all_partitions) == 1:
        return all_partitions[0]
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


async def start_producer(options: KafkaOptions) -> Any:
    """A started aiokafka producer with acks=all and the URL's idempotence.

    Raises:
        BusError: the brokers cannot be reached, or refuse an idempotent producer.
    """
    producer = AIOKafkaProducer(
        acks="all", enable_idempotence=options.idempotence, partitioner=partition_for,
        **options.client_args(),
    )
    try:
        await producer.start()
    except KafkaConnectionError as err:
        await producer.stop()
        raise unreachable(options, err) from err
    except KafkaError as err:
        await producer.stop()
        if options.idempotence:
            raise BusError(
                f"the Kafka brokers of {options.url} refused an idempotent producer ({err!r}); "
                "add ?idempotence=false to the bus URL if the broker cannot do it"
            ) from err
        raise BusError(f"cannot start a Kafka producer on {options.url}: {err!r}") from err
    return producer


def _task_id(body: bytes) -> bytes | None:
    """The task id in ``body``, the default key: one task's resends stay on one partition."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # any bytes may be sent: 100,000 "[" must not crash send()
        return None
    ident = doc.get("id") if isinstance(doc, dict) else None
    return ident.encode() if isinstance(ident, str) and ident else None


class KafkaProducer(BusPart):
    """Sends with ``acks=all``, keyed by task id unless ``key`` is given; creates topics."""

    def __init__(self, options: KafkaOptions) -> None:
        self.options = options
        self._client: Any = None
        self._batches: RecordBatches | None = None
        self._partitions: PartitionLists | None = None
        self._topics: set[str] = set()
        #: topic -> its creation under way, shared by the sends that wait for it
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._start_lock = asyncio.Lock()
        self._stopped = False
        self._sent = 0

    async def start(self) -> None:
        """Connect.

        Raises:
            BusError: unreachable brokers, or a broker refusing idempotence.
            BusClosedError: called after ``stop()``.
        """
        async with self._start_lock:  # concurrent first sends start it once
            if self._stopped:
                raise BusClosedError("Kafka producer used after stop()")
            if self._client is None:
                self._client = await start_producer(self.options)
                self._batches = RecordBatches(self._client)
                self._partitions = PartitionLists(self._client)

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Send and wait for all in-sync replicas to have it.

        Sent by the task holding an unsettled Kafka message (the Launcher sending its done
        task), it returns once the record is queued: that message's ``ack()`` waits for the
        delivery before its offset may be committed, so a batch of done tasks is confirmed
        by one round trip rather than one each.

        Raises:
            BusError: the broker refused the message or cannot be reached.
            BusClosedError: called after ``stop()``.
        """
        client = self._client
        if client is None:
            await self.start()
            client = self._client
        if topic not in self._topics:
            await self._create(topic)
        raw_key = key.encode() if key is not None else _task_id(body)
        handed = HANDED.get()
        try:
            if handed is not None and handed.takes_delivery():
                partitions = self._partitions.of(topic) if self._partitions is not None else None
                delivered = None
                if partitions is not None and self._batches is not None:
                    partition = handed.partition_like(raw_key, len(partitions))
                    if partition is None:
                        partition = partition_for(raw_key, partitions, partitions)
                    delivered = self._batches.append(topic, partition, raw_key, body)
                if delivered is None:  # no metadata yet, or a record bigger than a batch
                    delivered = await client.send(topic, body, key=raw_key)
                handed.delivery(delivered)
            else:
                await client.send_and_wait(topic, body, key=raw_key)
        except KafkaError as err:
            raise BusError(f"Kafka at {self.options.url} refused a message for {topic!r}: {err!r}") from err
        self._sent += 1

    async def _create(self, topic: str) -> None:
        """Create ``topic`` unless it exists, once for all the sends waiting on it (the first
        done tasks of a hundred runners come at once; each check opens an admin client).

        Raises:
            BusError: the brokers cannot be reached or refuse it; the next send tries again.
        """
        creating = self._creating.get(topic)
        if creating is None:
            creating = self._creating[topic] = asyncio.ensure_future(ensure_topic(self.options, topic))
        try:
            await asyncio.shield(creating)  # a caller cancelled meanwhile leaves it to the others
        finally:
            if creating.done():
                self._creating.pop(topic, None)
        self._topics.add(topic)

    async def stop(self) -> None:
        """Send what is batched, flush pending sends and close. Idempotent."""
        self._stopped = True
        client, self._client = self._client, None
        if self._batches is not None:
            await self._batches.flush()
        if client is not None:
            await client.stop()

    def info(self) -> BusInfo:
        return {"bus": "kafka", "brokers": ",".join(self.options.bootstrap), "sent": self._sent}

