"""Publish acknowledgements (PubAcks) of JetStream publishes on one connection.

nats-py's ``JetStreamContext.publish`` is a request: per message it draws a NUID and random
bytes for the reply subject, wraps the reply in ``asyncio.wait_for`` (a timer and two more
futures) and decodes the PubAck into a dataclass. A done task needs none of that: one reply
subscription for the whole producer, a counter for the reply subject, one future per
message, and a sweep every quarter of the timeout that fails the futures past it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["PubAcks"]

logger = logging.getLogger(__name__)

#: sweeps per timeout: a publish fails between ``timeout`` and ``timeout * (1 + 1/SWEEPS)``
SWEEPS = 4


class PubAcks:
    """Futures for the PubAcks of publishes made with ``reply()``'s subjects.

    A future ends with None (stored, or a duplicate of a stored message), with
    ``nats.js.errors.NoStreamResponseError`` (no stream takes the subject), an ``APIError``
    (JetStream refused the message) or ``TimeoutError`` (no PubAck within ``timeout``:
    lost with a connection, or the server is slow).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._prefix = ""
        self._sub: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}  # oldest first
        self._next = 0
        self._marks: deque[tuple[float, int]] = deque()  # (time, first number not yet sent)
        self._sweeper: asyncio.Task[None] | None = None
        #: the loop of ``start()``: asking asyncio for it costs a getpid() system call a time
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, client: Client) -> None:
        """Subscribe to the replies (once per connection)."""
        self._loop = asyncio.get_running_loop()
        self._prefix = client.new_inbox() + "."
        self._sub = await client.subscribe(self._prefix + "*", cb=self._on_reply, pending_msgs_limit=-1)

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """A reply subject for one publish and the future its PubAck settles."""
        number = self._next
        self._next = number + 1
        token = f"{number:x}"
        loop = self._loop
        assert loop is not None, "PubAcks.start() first"
        future: asyncio.Future[None] = loop.create_future()
        self._waiting[token] = future
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), name="jetstream-puback-sweep")
        return self._prefix + token, future

    def forget(self, reply: str) -> None:
        """The publish for ``reply`` never left (the client refused it): stop waiting."""
        future = self._waiting.pop(reply[len(self._prefix):], None)
        if future is not None and not future.done():
            future.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix):], None)
        if future is None or future.done():
            return  # it timed out already: the retry has its own reply subject
        data = msg.data
        if data.startswith(b'{"stream":'):  # nats-server writes "error" first when there is one
            future.set_result(None)
            return
        headers = msg.headers
        if headers and headers.get("Status") == "503":  # no responders: no stream has the subject
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = json.loads(data)
            error = reply.get("error")
            if error is None and "stream" in reply:
                future.set_result(None)  # a PubAck written otherwise
                return
            nats.js.errors.APIError.from_error(error)  # raises the error it describes
        except (nats.errors.Error, nats.js.errors.Error) as err:
            future.set_exception(err)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            future.set_exception(nats.js.errors.APIError(description=f"unreadable PubAck {data[:200]!r}: {err!r}"))

    async def _sweep(self) -> None:
        """Fail the futures older than ``timeout``; ends when none waits."""
        loop = asyncio.get_running_loop()
        tick = self.timeout / SWEEPS
        try:
            while self._waiting:
                now = loop.time()
                self._marks.append((now, self._next))
                limit = -1
                while self._marks and self._marks[0][0] <= now - self.timeout:
                    limit = self._marks.popleft()[1]
                if limit > 0:
                    late = []
                    for token in self._waiting:
                        if int(token, 16) >= limit:
                            break
                        late.append(token)
                    for token in late:
                        future = self._waiting.pop(token)
                        if not future.done():
                            future.set_exception(TimeoutError(f"no PubAck within {self.timeout:g}s"))
                await asyncio.sleep(tick)
        finally:
            self._marks.clear()
            self._sweeper = None

    async def stop(self) -> None:
        """Stop sweeping; fail what still waits (the connection is closing)."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(nats.errors.ConnectionClosedError())
