"""The raw nats-py loop ``taskbus bench --bus nats://`` measures the core NATS bus against.

Core NATS keeps nothing for absent subscribers, so the loop subscribes before it publishes
the backlog (untimed; it waits in the subscription's buffer). Then ``max_in_progress``
coroutines each take a message, publish a done body to the done subject and flush (the
server has read it), as the Launcher does with the ``nats://`` bus. Only connecting uses
taskbus code (to read the URL and credentials the same way).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from nats.aio.msg import Msg

from task.bus.nats import NatsOptions
from task.bus.nats_connect import connect
from task.bus.registry import Credentials

__all__ = ["raw_loop"]

BODY = b'{"type":"nop","info":""}'


async def raw_loop(url: str, *, n: int, max_in_progress: int, credentials: Credentials) -> float:
    """Seconds for raw nats-py to handle ``n`` messages ``max_in_progress`` at a time."""
    client = await connect(NatsOptions.from_url(url, credentials).connect)
    topic = "raw_" + uuid.uuid4().hex[:8]
    done_topic = topic + "_done"
    queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=max_in_progress)
    finished = asyncio.Event()
    handled = 0

    async def on_message(msg: Msg) -> None:
        await queue.put(msg)

    async def worker() -> None:
        nonlocal handled
        while True:
            msg = await queue.get()
            await client.publish(done_topic, msg.data)
            await client.flush()
            handled += 1
            if handled >= n:
                finished.set()

    try:
        await client.subscribe(topic, queue="raw", cb=on_message, pending_msgs_limit=n + 1024)
        await client.flush()
        for _ in range(n):
            await client.publish(topic, BODY)
        await client.flush()
        began = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(max_in_progress)]
        try:
            await finished.wait()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return time.perf_counter() - began
    finally:
        await client.close()
