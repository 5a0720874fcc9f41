"""The raw aiokafka loop ``taskbus bench --bus kafka://…`` measures the Kafka bus against.

Same guarantees as the Launcher on the Kafka bus: a consumer group with manual commits, up
to ``max_in_progress`` messages in progress at once, each message's done message sent with
``acks=all`` and confirmed before the commit that covers it. The loop is the textbook one:
take a batch of at most ``max_in_progress`` records, send their done messages concurrently,
wait for every confirmation, commit the batch, repeat. No taskbus code runs in the timed part.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from task.bus.kafka_options import KafkaOptions, ensure_topic
from task.bus.registry import Credentials
from task.task import Task

__all__ = ["raw_loop"]


async def raw_loop(url: str, *, n: int, max_in_progress: int, credentials: Credentials) -> float:
    """Seconds for raw aiokafka to consume ``n`` no-op tasks from a fresh topic.

    The clock runs from the consumer's start (joining its group) to its stop, as for the
    Launcher; publishing the backlog is not timed.

    Raises:
        BusError: the brokers cannot be reached.
    """
    options = KafkaOptions.from_url(url, credentials)
    args = options.client_args()
    topic = "raw_" + uuid.uuid4().hex[:8]
    done_topic = topic + "_done"
    await ensure_topic(options, topic)
    await ensure_topic(options, done_topic)
    producer = AIOKafkaProducer(acks="all", enable_idempotence=options.idempotence, **args)
    await producer.start()
    try:
        pending = []
        for i in range(n):
            body = Task.new("nop", "", id=f"raw-{i}").to_json()
            pending.append(await producer.send(topic, body, key=f"raw-{i}".encode()))
        await asyncio.gather(*pending)

        began = time.perf_counter()
        consumer = AIOKafkaConsumer(
            topic, group_id=topic, enable_auto_commit=False, auto_offset_reset="earliest", **args
        )
        await consumer.start()
        try:
            done = 0
            while done < n:
                batches = await consumer.getmany(timeout_ms=1000, max_records=min(max_in_progress, n - done))
                sends = [
                    producer.send_and_wait(done_topic, record.value, key=record.key)
                    for records in batches.values() for record in records
                ]
                await asyncio.gather(*sends)
                if batches:
                    await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
                done += len(sends)
        finally:
            await consumer.stop()
        return time.perf_counter() - began
    finally:
        await producer.stop()
