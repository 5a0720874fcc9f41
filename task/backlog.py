"""A worker's backlog (its topic's tasks waiting on the bus), read when someone looks.

``/stats``, ``/metrics`` and the status page show how many tasks wait for the worker's
channel. Asking the bus costs a round trip (JetStream consumer info, Kafka offsets), so the
reading is cached: ``latest()`` returns the last reading at once and, when it is older than
``every`` seconds, starts a new one in the background. Nobody looking means no reads. Each
read opens an inspector and closes it, so nothing stays connected between reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.inspect.base import CannotInspect, Inspector, TopicStats, open_inspector

__all__ = ["BACKLOG_EVERY", "BacklogReader"]

logger = logging.getLogger(__name__)

#: seconds a backlog reading is served before the next one starts (probes read stats() too)
BACKLOG_EVERY = 10.0
#: seconds a read may take before it counts as failed
READ_TIMEOUT = 10.0


class BacklogReader:
    """Reads the backlog of ``topic`` for ``channel`` on the bus ``url``, at most every ``every`` s."""

    def __init__(
        self,
        url: str,
        topic: str,
        channel: str,
        *,
        credentials: Credentials | None = None,
        every: float = BACKLOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
        inspector: Callable[[str, Credentials | None], Inspector] = open_inspector,
    ) -> None:
        self.url = url
        self.topic = topic
        self.channel = channel
        self.credentials = credentials
        self.every = every
        self.clock = clock
        self._open = inspector
        self._reading: dict[str, object] | None = None
        self._read_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        #: set when this bus cannot be inspected at all (a ConfigError): no more reads
        self._impossible = False

    def latest(self) -> dict[str, object] | None:
        """The last reading: the backlog's counts (``TopicStats.to_json()``) and ``age_s``, or
        ``error`` when the read failed; None before the first read ends. Starts a new read in
        the background when the last is older than ``every`` (needs a running event loop)."""
        stale = self._read_at is None or self.clock() - self._read_at >= self.every
        if stale and not self._impossible and self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None  # stats() read outside the loop (a final log line): no read
            if loop is not None:
                self._task = loop.create_task(self._read(), name=f"backlog-{self.topic}")
        if self._reading is None or self._read_at is None:
            return None
        return {**self._reading, "age_s": round(self.clock() - self._read_at, 1)}

    async def refresh(self) -> dict[str, object] | None:
        """Read now (or wait for the read under way); the new reading."""
        if self._task is None and not self._impossible:
            self._task = asyncio.get_running_loop().create_task(self._read())
        if self._task is not None:
            await asyncio.shield(self._task)
        return self.latest()

    async def _read(self) -> None:
        try:
            inspector = self._open(self.url, self.credentials)
            try:
                stats = await asyncio.wait_for(inspector.backlog(self.topic, self.channel), READ_TIMEOUT)
            finally:
                await inspector.close()
            self._reading = stats.to_json()
        except (ConfigError, CannotInspect) as err:  # never readable here (core NATS keeps nothing)
            self._impossible = True
            self._reading = TopicStats(self.topic, self.channel, notes=[str(err)]).to_json()
        except (BusError, TimeoutError, OSError) as err:
            self._reading = {"error": f"cannot read the backlog: {err or type(err).__name__}"}
        except Exception as err:  # an inspector's bug must not reach the status page
            logger.exception("reading the backlog of %r failed", self.topic)
            self._reading = {"error": f"cannot read the backlog: {type(err).__name__}: {err}"}
        finally:
            self._read_at = self.clock()
            self._task = None
