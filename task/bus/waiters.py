"""The ``msg()`` calls waiting for a message, for consumers that buffer what they receive.

The Launcher runs ``max_in_progress`` runners and each waits in ``msg()``. A consumer that
receives in the background wakes them with a baton: one waiting call at a time, and the
call that takes a message passes the baton on while more are ready (``wake_one`` again
after its take). A runner that never waits (a no-op worker) then takes a whole batch
itself instead of a task switch per message waking runners that find nothing left, while
runners whose work does wait are woken one after the other as long as messages remain.
A wake-up is passed on when the woken call was cancelled before it could take its message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["Waiters"]

_BATON = True  #: a waiter's result when woken for a message (``wake_all`` gives False)


class Waiters:
    """A queue of waiting ``msg()`` calls."""

    __slots__ = ("_baton_out", "_loop", "_queue")

    def __init__(self) -> None:
        self._queue: deque[asyncio.Future[bool]] = deque()
        #: the loop of the first wait: Python 3.11's get_running_loop() makes a system call
        #: (a fork check) each time, and a consumer waits in one loop
        self._loop: asyncio.AbstractEventLoop | None = None
        #: a call was woken for a message and has not run yet: it passes the baton on
        self._baton_out = False

    async def wait(self, has_ready: Callable[[], bool]) -> None:
        """Wait until woken. ``has_ready`` says whether a message is still waiting, so a call
        cancelled just after its wake-up hands that wake-up to the next waiter."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._queue.append(waiter)
        try:
            if await waiter:
                self._baton_out = False
        except asyncio.CancelledError:
            if not waiter.done():
                self._queue.remove(waiter)
            elif not waiter.cancelled() and waiter.result():
                self._baton_out = False
                if has_ready():
                    self.wake_one()  # we were woken for a message we will not take
            raise

    def wake_one(self) -> None:
        """A message is ready: wake the longest-waiting call, unless one woken already has
        yet to run (it will pass the baton on if more are ready when it takes its own)."""
        if self._baton_out:
            return
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(_BATON)
                self._baton_out = True
                return

    def wake_all(self) -> None:
        """The consumer stops, or its state changed for everyone: every waiting call returns."""
        for waiter in self._queue:
            if not waiter.done():
                waiter.set_result(not _BATON)
        self._queue.clear()
        self._baton_out = False
