"""The raw nats-py loop ``taskbus bench --bus jetstream://`` measures the JetStream bus against.

The peer harness's confirmed worker (``s_nats_js_confirmed.py``): a durable pull consumer
fetches batches of 100; each task's done message goes into a stream with ``publish_async``,
and the batch's originals are acked once every PubAck of the batch is in. The guarantee of
the JetStream bus (done confirmed before the ack) with the fewest round trips the client
allows; ``max_in_progress`` does not apply. The backlog is published (and acked) untimed
into a fresh stream; the clock stops once the last ack has reached the server (one flush).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import nats.errors

from task.bench.raw.tasks import STALL_SECONDS, backlog, done_body, stalled
from task.bench.timing import Stopwatch, Timing
from task.bus.jetstream_options import JetStreamOptions, stream_name
from task.bus.nats_connect import connect
from task.credentials import Credentials

__all__ = ["BATCH", "DURABLE", "raw_loop"]

#: messages per fetch (the harness's BENCH_JS_BATCH)
BATCH = 100
#: the pull consumer's durable name, in the task stream
DURABLE = "raw"
#: backlog publishes awaited together
_FILL_CHUNK = 1000


async def raw_loop(
    url: str, *, n: int, max_in_progress: int, credentials: Credentials, topic: str | None = None
) -> Timing:
    """Time raw nats-py handling ``n`` tasks; done messages go to ``topic + "_done"``.

    Each subject gets its own stream (``stream_name``). A fresh topic (the default) has its
    streams deleted afterwards; a named one (a test's) keeps them for inspection.

    Raises:
        BusError: the server cannot be reached, or no message came for ``STALL_SECONDS``.
    """
    del max_in_progress  # the harness's batches, not the Launcher's limit
    options = JetStreamOptions.from_url(url, credentials)
    client = await connect(options.connect)
    keep = topic is not None
    topic = topic or "raw_" + uuid.uuid4().hex[:8]
    done_topic = topic + "_done"
    streams: list[str] = []
    try:
        filling = client.jetstream(publish_async_max_pending=_FILL_CHUNK)
        for subject in (topic, done_topic):
            await filling.add_stream(name=stream_name(subject), subjects=[subject], storage=options.storage)
            streams.append(stream_name(subject))
        bodies = backlog(n)
        for start in range(0, n, _FILL_CHUNK):
            acks = [await filling.publish_async(topic, body) for body in bodies[start:start + _FILL_CHUNK]]
            await asyncio.gather(*acks)

        js = client.jetstream(publish_async_max_pending=4 * BATCH)
        sub = await js.pull_subscribe(topic, durable=DURABLE, stream=stream_name(topic))
        watch = Stopwatch()
        handled = 0
        last_message = time.monotonic()
        while handled < n:
            try:
                msgs = await sub.fetch(batch=BATCH, timeout=0.5)
            except nats.errors.TimeoutError:
                if time.monotonic() - last_message > STALL_SECONDS:
                    raise stalled("JetStream", handled, n) from None
                continue
            futures = [await js.publish_async(done_topic, done_body(m.data)) for m in msgs]
            await asyncio.gather(*futures)  # every done message is in its stream ...
            for m in msgs:
                await m.ack()  # ... before its task is acked
            handled += len(msgs)
            last_message = time.monotonic()
        await client.flush()
        return watch.stop()
    finally:
        try:
            if not keep:
                for stream in streams:
                    await client.jetstream().delete_stream(stream)
        finally:
            await client.close()
