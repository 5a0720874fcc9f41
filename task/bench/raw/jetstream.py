"""The raw nats-py loop ``taskbus bench --bus jetstream://`` measures the JetStream bus against.

Publishes the backlog to a fresh stream (untimed), then times a durable pull consumer:
one fetcher asks for as many messages as are free of ``max_in_progress`` (nats-py
``fetch``), and ``max_in_progress`` coroutines each publish a done body with a confirmed
JetStream publish and then ack, as the Launcher does. Only connecting uses taskbus code.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from task.bus.jetstream_options import JetStreamOptions
from task.bus.nats_connect import connect
from task.bus.registry import Credentials

__all__ = ["raw_loop"]

BODY = b'{"type":"nop","info":""}'


async def raw_loop(url: str, *, n: int, max_in_progress: int, credentials: Credentials) -> float:
    """Seconds for raw nats-py to handle ``n`` JetStream messages ``max_in_progress`` at a time."""
    options = JetStreamOptions.from_url(url, credentials)
    client = await connect(options.connect)
    tag = uuid.uuid4().hex[:8]
    topic, done_topic, stream = f"raw_{tag}", f"raw_{tag}_done", f"RAW_{tag.upper()}"
    js = client.jetstream()
    try:
        await js.add_stream(name=stream, subjects=[topic, done_topic], storage=options.storage)
        for start in range(0, n, 1000):
            acks = [await js.publish_async(topic, BODY) for _ in range(min(1000, n - start))]
            await asyncio.gather(*acks)
        sub = await js.pull_subscribe(
            topic, durable="raw", stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                                  max_ack_pending=max(1000, max_in_progress)),
        )
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        space = asyncio.Event()
        finished = asyncio.Event()
        held = handled = 0

        async def fetcher() -> None:
            nonlocal held
            fetched = 0
            while fetched < n:
                free = min(max_in_progress - held, n - fetched)
                if free <= 0:
                    space.clear()
                    await space.wait()
                    continue
                try:
                    msgs = await sub.fetch(batch=free, timeout=5)
                except nats.errors.TimeoutError:
                    continue
                held += len(msgs)
                fetched += len(msgs)
                for msg in msgs:
                    queue.put_nowait(msg)

        async def worker() -> None:
            nonlocal held, handled
            while True:
                msg = await queue.get()
                await js.publish(done_topic, msg.data)
                await msg.ack()
                held -= 1
                space.set()
                handled += 1
                if handled >= n:
                    finished.set()

        began = time.perf_counter()
        tasks = [asyncio.create_task(fetcher())]
        tasks += [asyncio.create_task(worker()) for _ in range(max_in_progress)]
        try:
            await finished.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return time.perf_counter() - began
    finally:
        try:
            await js.delete_stream(stream)
        finally:
            await client.close()
