"""The Kafka producer: ``acks=all``, keyed by task id, topics created on first use."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, KafkaError  # type: ignore[import-untyped]

from task.bus.base import BusInfo, BusPart
from task.bus.kafka_options import KafkaOptions, ensure_topic, unreachable
from task.errors import BusClosedError, BusError

__all__ = ["KafkaProducer", "start_producer"]

logger = logging.getLogger(__name__)


async def start_producer(options: KafkaOptions) -> Any:
    """A started aiokafka producer with acks=all and the URL's idempotence.

    Raises:
        BusError: the brokers cannot be reached, or refuse an idempotent producer.
    """
    producer = AIOKafkaProducer(
        acks="all", enable_idempotence=options.idempotence, **options.client_args()
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
        self._topics: set[str] = set()
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

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Send and wait for all in-sync replicas to have it.

        Raises:
            BusError: the broker refused the message or cannot be reached.
            BusClosedError: called after ``stop()``.
        """
        if self._client is None:
            await self.start()
        if topic not in self._topics:
            await ensure_topic(self.options, topic)
            self._topics.add(topic)
        raw_key = key.encode() if key is not None else _task_id(body)
        try:
            await self._client.send_and_wait(topic, body, key=raw_key)
        except KafkaError as err:
            raise BusError(f"Kafka at {self.options.url} refused a message for {topic!r}: {err!r}") from err
        self._sent += 1

    async def stop(self) -> None:
        """Flush pending sends and close. Idempotent."""
        self._stopped = True
        client, self._client = self._client, None
        if client is not None:
            await client.stop()

    def info(self) -> BusInfo:
        return {"bus": "kafka", "brokers": ",".join(self.options.bootstrap), "sent": self._sent}
