"""Inspecting core NATS: there is nothing to inspect, and it says so.

Core NATS keeps no message: a task exists only on its way to a subscriber and while a worker
holds it, so no topic has a backlog, nothing can be listed and nothing can be peeked. The
backlog is reported as zero waiting with that explanation (a worker's ``/stats`` shows it);
listing and peeking raise with it. ``jetstream://`` keeps tasks and can be inspected.
"""

from __future__ import annotations

from task.bus.nats import NatsOptions
from task.credentials import Credentials
from task.inspect.base import CannotInspect, CannotPeek, TopicStats

__all__ = ["KEEPS_NOTHING", "NatsInspector", "open_inspector"]

#: the one line every answer of this inspector carries
KEEPS_NOTHING = (
    "core NATS keeps no messages: a task waits nowhere, it reaches a listening worker or is "
    "lost; use jetstream:// to keep and inspect tasks"
)


class NatsInspector:
    """Answers without connecting: the server has nothing to tell."""

    def __init__(self, options: NatsOptions) -> None:
        self.options = options

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        raise CannotInspect(KEEPS_NOTHING)

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        return TopicStats(topic, channel, waiting=0, notes=[KEEPS_NOTHING])

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        raise CannotPeek(KEEPS_NOTHING)

    async def close(self) -> None:
        """Nothing was opened."""


def open_inspector(url: str, *, credentials: Credentials) -> NatsInspector:
    """``nats://h:p``: checked like a worker's URL, so a typo is still reported.

    Raises:
        ConfigError: a malformed URL or option.
    """
    return NatsInspector(NatsOptions.from_url(url, credentials))
