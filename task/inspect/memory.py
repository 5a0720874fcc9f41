"""Inspecting the in-process memory bus: meaningful only inside the process that holds it.

A worker's ``/stats`` can show its memory topic's backlog; ``taskbus topics`` run as its own
process would see only its own, empty broker, so the CLI refuses ``memory:`` with a clear
message. The memory bus keeps one queue per topic whatever the channel, so every channel of
a topic sees the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from task.bus.memory import MemoryBroker
from task.credentials import Credentials
from task.inspect.age import created_age, utcnow
from task.inspect.base import TopicStats
from task.url import parse_url

__all__ = ["MemoryInspector", "open_inspector"]

_SHARED = "one queue per topic, shared by every channel"


class MemoryInspector:
    """Reads the queues of a ``MemoryBroker`` without taking anything from them."""

    def __init__(self, broker: MemoryBroker, now: Callable[[], datetime] = utcnow) -> None:
        self.broker = broker
        self._now = now

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        return [
            self._stats(name, "")
            for name in sorted(self.broker)
            if not prefix or name.startswith(prefix)
        ]

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        return self._stats(topic, channel)

    def _stats(self, topic: str, channel: str) -> TopicStats:
        if topic not in set(self.broker):  # broker.topic() would create it
            return TopicStats(topic, channel, waiting=0, in_flight=0, redelivered=0)
        queue = self.broker.topic(topic)
        ready = list(queue.ready)
        return TopicStats(
            topic, channel,
            waiting=len(ready),
            # a nacked message waiting out its delay counts as in flight until it is back
            in_flight=queue.unacked,
            redelivered=sum(1 for m in ready if m.attempt > 1),
            oldest_age_seconds=created_age(ready[0].body, self._now()) if ready else None,
            notes=[_SHARED],
        )

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        if topic not in set(self.broker):
            return []
        return [m.body for m in list(self.broker.topic(topic).ready)[: max(0, n)]]

    async def close(self) -> None:
        """Nothing to close: the broker belongs to its process."""


def open_inspector(url: str, *, credentials: Credentials) -> MemoryInspector:
    """``memory:NAME``: this process's broker NAME, as ``task.bus.memory`` picks it.

    Raises:
        ConfigError: the URL has options.
    """
    parsed = parse_url(url)
    parsed.check_options(())
    return MemoryInspector(MemoryBroker.named(parsed.path.strip("/") or "default"))
