"""The raw NSQ loop ``taskbus bench`` measures the NSQ bus against.

Only the protocol module and one connection per role, no consumer or Launcher logic: MPUB
``n`` no-op tasks (untimed), then SUB with RDY ``max_in_progress`` and run that many
handlers, each publishing the done task and waiting for nsqd's OK before FIN, which is the
Launcher's guarantee. Needs a real nsqd.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from task.bench.timing import Stopwatch, Timing
from task.bus import nsq_protocol as proto
from task.bus.nsq import NsqOptions
from task.bus.nsq_connection import NsqConnection
from task.credentials import Credentials
from task.errors import BusError

__all__ = ["raw_loop"]

logger = logging.getLogger(__name__)

#: Messages per MPUB while filling the topic (well under nsqd's 5 MiB --max-body-size).
BATCH = 500


async def raw_loop(url: str, *, n: int, max_in_progress: int, credentials: Credentials) -> Timing:
    """Time consuming ``n`` tasks from an ``nsq://``/``nsqlookup://`` URL, done before FIN.

    The input topic is left behind, empty; done tasks go to an ephemeral topic that nsqd
    forgets.

    Raises:
        BusError: nsqd cannot be reached or refused a command.
        ConfigError: a malformed URL.
    """
    options = NsqOptions.from_url(url)
    if n <= 0:
        return Timing(0.0, 0.0)
    addresses = await options.discover(None)
    if not addresses:
        raise BusError(f"no nsqd found through {url}")
    host, port = addresses[0]
    settings = options.settings(credentials)
    topic = f"bench_raw_{uuid.uuid4().hex[:10]}"
    done_topic = f"{topic}_done#ephemeral"
    inbox: asyncio.Queue[proto.MessageFrame] = asyncio.Queue()

    publisher = NsqConnection(host, port, settings)
    subscriber = NsqConnection(host, port, settings, on_message=lambda _c, m: inbox.put_nowait(m))
    await publisher.connect()
    try:
        await subscriber.connect()
        for start in range(0, n, BATCH):
            bodies = [
                b'{"type":"bench","info":"%d"}' % i for i in range(start, min(n, start + BATCH))
            ]
            await publisher.request(proto.mpub(topic, bodies))
        await subscriber.request(proto.sub(topic, "raw"))
        finished = 0
        all_done = asyncio.Event()

        async def handle() -> None:
            nonlocal finished
            while finished < n:
                message = await inbox.get()
                task = json.loads(message.body)
                task.update(result="complete", msg="", started="", ended="")
                await publisher.request(proto.pub(done_topic, json.dumps(task).encode()))
                subscriber.send(proto.fin(message.id))
                finished += 1
                if finished >= n:
                    all_done.set()

        watch = Stopwatch()
        subscriber.send(proto.rdy(max(1, min(max_in_progress, subscriber.max_rdy_count))))
        handlers = [asyncio.create_task(handle()) for _ in range(max(1, max_in_progress))]
        waiting = asyncio.create_task(all_done.wait())
        try:
            # a handler that fails (nsqd refused the done task) ends the run with its error
            await asyncio.wait([waiting, *handlers], return_when=asyncio.FIRST_COMPLETED)
            elapsed = watch.stop()
            for handler in handlers:
                if handler.done() and handler.exception() is not None:
                    raise BusError(
                        f"raw NSQ loop failed: {handler.exception()}"
                    ) from handler.exception()
        finally:
            waiting.cancel()
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(waiting, *handlers, return_exceptions=True)
        await subscriber.request(proto.cls())
        return elapsed
    finally:
        await subscriber.close()
        await publisher.close()
