"""The ``msg()`` calls waiting for a message, for consumers that buffer what they receive.

The Launcher runs ``max_in_progress`` runners and each waits in ``msg()``: a consumer that
receives in the background must wake exactly one of them per message, oldest first, and must
pass a wake-up on when the woken call was cancelled before it could take its message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["Waiters"]


class Waiters:
    """A queue of waiting ``msg()`` calls."""

    def __init__(self) -> None:
        self._queue: deque[asyncio.Future[None]] = deque()

    async def wait(self, has_ready: Callable[[], bool]) -> None:
        """Wait until woken. ``has_ready`` says whether a message is still waiting, so a call
        cancelled just after its wake-up hands that wake-up to the next waiter."""
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.done():
                self._queue.remove(waiter)
            elif has_ready():
                self.wake_one()  # we were woken for a message we will not take
            raise

    def wake_one(self) -> None:
        """A message is ready: wake the longest-waiting call."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        """The consumer stops: every waiting call returns."""
        for waiter in self._queue:
            if not waiter.done():
                waiter.set_result(None)
        self._queue.clear()
