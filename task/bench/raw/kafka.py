"""The raw aiokafka loop ``taskbus bench --bus kafka://…`` measures the Kafka bus against.

The peer harness's worker (``s_kafka.py``): a consumer group with manual commits takes
batches of up to 500 records (``getmany``), sends each done message without awaiting it,
awaits the batch's deliveries, then commits. Done confirmed before the commit that covers
its task, as on the Kafka bus; ``max_in_progress`` does not apply. The producer is the
bus's (``acks=all``, the URL's idempotence) and the topics get the URL's partitions.
The backlog is published untimed; the clock runs from the consumer's start (joining its
group) to its stop, as for the Launcher.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from task.bench.raw.tasks import STALL_SECONDS, backlog, done_body, stalled
from task.bench.timing import Stopwatch, Timing
from task.bus.kafka_options import KafkaOptions, ensure_topic
from task.credentials import Credentials

__all__ = ["BATCH", "raw_loop"]

#: records per getmany (the harness's BENCH_KAFKA_BATCH)
BATCH = 500


async def raw_loop(
    url: str, *, n: int, max_in_progress: int, credentials: Credentials, topic: str | None = None
) -> Timing:
    """Time raw aiokafka handling ``n`` tasks; done messages go to ``topic + "_done"``.

    ``topic`` (default a fresh one) is also the consumer group's id, so a test that names it
    can read the group's committed offsets.

    Raises:
        BusError: the brokers cannot be reached, or no record came for ``STALL_SECONDS``.
    """
    del max_in_progress  # the harness's batches, not the Launcher's limit
    options = KafkaOptions.from_url(url, credentials)
    args = options.client_args()
    topic = topic or "raw_" + uuid.uuid4().hex[:8]
    done_topic = topic + "_done"
    await ensure_topic(options, topic)
    await ensure_topic(options, done_topic)
    producer = AIOKafkaProducer(acks="all", enable_idempotence=options.idempotence, **args)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, body) for body in backlog(n)])

        watch = Stopwatch()
        consumer = AIOKafkaConsumer(
            topic, group_id=topic, enable_auto_commit=False, auto_offset_reset="earliest", **args
        )
        await consumer.start()
        try:
            handled = 0
            last_record = time.monotonic()
            while handled < n:
                batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
                if not batch:
                    if time.monotonic() - last_record > STALL_SECONDS:
                        raise stalled("Kafka", handled, n)
                    continue
                futures = []
                for records in batch.values():
                    for record in records:
                        futures.append(await producer.send(done_topic, done_body(record.value)))
                await asyncio.gather(*futures)  # every done message delivered ...
                await consumer.commit()  # ... before the batch's offsets are committed
                handled += len(futures)
                last_record = time.monotonic()
        finally:
            await consumer.stop()
        return watch.stop()
    finally:
        await producer.stop()
