"""The raw nats-py loop ``taskbus bench --bus nats://`` measures the core NATS bus against.

The peer harness's worker (``s_nats_core.py``): one subscription callback, which nats-py
runs one message at a time, decodes the task and publishes its done message without a
flush; nats-py's flusher sends what has piled up. Core NATS has no confirmation to wait
for, so this is the fastest correct loop the client allows; ``max_in_progress`` does not
apply. Core NATS keeps nothing for absent subscribers, so the loop subscribes before it
publishes the backlog (untimed) and the callback holds the first message until the clock
runs. The clock stops once the last done message has reached the server (one flush).
"""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.msg import Msg

from task.bench.raw.tasks import STALL_SECONDS, backlog, done_body, stalled
from task.bench.timing import Stopwatch, Timing
from task.bus.nats import NatsOptions
from task.bus.nats_connect import connect
from task.credentials import Credentials

__all__ = ["raw_loop"]

#: bytes a subscription may buffer beyond the backlog itself
_SLACK_BYTES = 1 << 20


async def raw_loop(
    url: str, *, n: int, max_in_progress: int, credentials: Credentials, topic: str | None = None
) -> Timing:
    """Time raw nats-py handling ``n`` tasks; done messages go to ``topic + "_done"``.

    ``topic`` defaults to a fresh one; a test names it to watch the done subject.

    Raises:
        BusError: the server cannot be reached, or no message came for ``STALL_SECONDS``.
    """
    del max_in_progress  # nats-py runs one callback at a time: the harness's concurrency
    client = await connect(NatsOptions.from_url(url, credentials).connect)
    topic = topic or "raw_" + uuid.uuid4().hex[:8]
    done_topic = topic + "_done"
    bodies = backlog(n)
    clock_runs = asyncio.Event()
    finished = asyncio.Event()
    handled = 0

    async def on_task(msg: Msg) -> None:
        nonlocal handled
        if not clock_runs.is_set():  # the backlog waits in the subscription until timed
            await clock_runs.wait()
        await client.publish(done_topic, done_body(msg.data))
        handled += 1
        if handled == n:
            finished.set()

    try:
        await client.subscribe(
            topic, queue="raw", cb=on_task, pending_msgs_limit=n + 1024,
            pending_bytes_limit=sum(map(len, bodies)) + _SLACK_BYTES,
        )
        await client.flush()
        for body in bodies:
            await client.publish(topic, body)
        await client.flush()
        watch = Stopwatch()
        clock_runs.set()
        while not finished.is_set():
            before = handled
            try:
                await asyncio.wait_for(finished.wait(), STALL_SECONDS)
            except TimeoutError:
                if handled == before:
                    raise stalled("core NATS", handled, n) from None
        await client.flush()
        return watch.stop()
    finally:
        await client.close()
