"""What a bus holds, seen from outside: the ``Inspector`` protocol and its ``TopicStats``.

``taskbus topics``, ``peek`` and ``dlq`` and a worker's ``/stats`` read the bus through this
one small protocol, one module per bus, so each bus says in its own words what it can tell
(JetStream's consumer info, Kafka's group lag, NSQ's ``/stats``, the file bus's offsets) and
what it cannot (core NATS keeps nothing; NSQ cannot show a message without consuming it).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Protocol, cast, runtime_checkable

from task.bus.registry import scheme_of
from task.credentials import Credentials
from task.errors import MissingExtraError, TaskError, UnknownBackendError

__all__ = ["INSPECTORS", "CannotInspect", "CannotPeek", "Inspector", "TopicStats", "open_inspector"]


class CannotInspect(TaskError):
    """Raised where the bus keeps nothing to look at (core NATS has no topics to list);
    ``reason`` is the one line to show the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CannotPeek(CannotInspect):
    """Raised by ``Inspector.peek`` where the bus cannot show a message without consuming it
    (NSQ) or keeps none (core NATS)."""


@dataclass
class TopicStats:
    """The backlog of one topic for one channel (a consumer group, a durable, a reader).

    A count is None where the bus does not know it (Kafka does not count in-flight messages;
    core NATS keeps nothing); ``notes`` says why, in the user's words.
    """

    topic: str
    channel: str
    #: tasks stored and not yet delivered to this channel
    waiting: int | None = None
    #: delivered, not yet acknowledged
    in_flight: int | None = None
    #: delivered more than once (JetStream: redelivered now; NSQ: requeued so far)
    redelivered: int | None = None
    #: waiting in the ledger's schedule to be sent later (retries, delayed tasks)
    delayed: int | None = None
    #: age of the oldest waiting task in seconds, where the bus keeps a time
    oldest_age_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    #: failed tasks waiting out their backoff in the ledger's schedule (``taskbus retry``)
    retrying: int | None = None

    def to_json(self) -> dict[str, object]:
        """A plain dict for ``--json`` and ``/stats``."""
        return asdict(self)


@runtime_checkable
class Inspector(Protocol):
    """Reads what a bus holds without changing it: nothing is consumed or acknowledged.

    Connects on first use; ``close()`` is idempotent.
    """

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        """One entry per topic and channel the bus knows, whose topic starts with ``prefix``.

        Raises:
            CannotInspect: the bus keeps no topics to list (core NATS).
            BusError: the bus cannot be reached.
        """

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        """The backlog of ``topic`` for ``channel`` (counts 0 where the topic has none yet).

        Raises:
            BusError: the bus cannot be reached.
        """

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        """Up to ``n`` of the next bodies of ``topic`` for ``channel`` (default: the topic, as
        a worker's channel defaults to its topic), oldest first, without consuming them.

        Raises:
            CannotPeek: the bus cannot show messages without consuming them.
            BusError: the bus cannot be reached.
        """

    async def close(self) -> None:
        """Disconnect. Idempotent."""


class _InspectModule(Protocol):
    def open_inspector(self, url: str, *, credentials: Credentials) -> Inspector: ...


#: scheme -> (module, extra, client import) as in ``task.bus.registry``: imported when used.
INSPECTORS: dict[str, tuple[str, str | None, str | None]] = {
    "file": ("task.inspect.file", None, None),
    "memory": ("task.inspect.memory", None, None),
    "nats": ("task.inspect.nats", "nats", "nats"),
    "jetstream": ("task.inspect.jetstream", "nats", "nats"),
    "kafka": ("task.inspect.kafka", "kafka", "aiokafka"),
    "nsq": ("task.inspect.nsq", None, None),
    "nsqlookup": ("task.inspect.nsq", None, None),
}


def open_inspector(url: str, credentials: Credentials | None = None) -> Inspector:
    """An inspector of the bus ``url`` (the same URL workers use). No I/O happens here.

    Raises:
        ConfigError: unknown scheme, a bus that cannot be inspected, a malformed URL, a
            missing extra.
    """
    scheme = scheme_of(url)
    entry = INSPECTORS.get(scheme)
    if entry is None:
        raise UnknownBackendError(
            f"cannot inspect the {scheme!r} bus of {url!r}; buses that can be inspected: "
            f"{', '.join(sorted(INSPECTORS))}"
        )
    module_name, extra, client = entry
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if client and err.name and err.name.split(".")[0] == client:
            raise MissingExtraError(
                f"inspecting the {scheme} bus needs {client}: pip install 'taskbus[{extra}]'"
            ) from err
        raise
    return cast(_InspectModule, module).open_inspector(url, credentials=credentials or Credentials())
