"""The closed registry of buses, keyed by URL scheme.

Entries are import strings, so a bus's client library is imported only when that bus is
used: ``import task`` and ``taskbus --help`` work with no extras installed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, cast

from task.bus.base import Consumer, Producer
from task.credentials import Credentials
from task.errors import ConfigError, MissingExtraError, UnknownBackendError

__all__ = ["BUSES", "open_consumer", "open_producer", "scheme_of"]


@dataclass(frozen=True)
class _Entry:
    module: str
    extra: str | None
    client: str | None  # the import that fails when the extra is missing


#: scheme -> where its bus lives. ``file``, ``memory`` and ``nop`` need nothing extra.
BUSES: dict[str, _Entry] = {
    "file": _Entry("task.bus.file", None, None),
    "memory": _Entry("task.bus.memory", None, None),
    "nop": _Entry("task.bus.nop", None, None),
    "nats": _Entry("task.bus.nats", "nats", "nats"),
    "jetstream": _Entry("task.bus.jetstream", "nats", "nats"),
    "kafka": _Entry("task.bus.kafka", "kafka", "aiokafka"),
    "nsq": _Entry("task.bus.nsq", None, None),
    "nsqlookup": _Entry("task.bus.nsq", None, None),
}


class _BusModule(Protocol):
    def open_consumer(
        self, url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
    ) -> Consumer: ...

    def open_producer(self, url: str, *, credentials: Credentials) -> Producer: ...


def scheme_of(url: str) -> str:
    """The scheme of a bus URL (``file`` for ``file:./data``).

    Raises:
        ConfigError: ``url`` has no scheme.
    """
    scheme, sep, _ = url.partition(":")
    if not sep or not scheme:
        raise ConfigError(
            f"bus URL {url!r} has no scheme; use one of: {', '.join(f'{s}:' for s in BUSES)}"
        )
    return scheme.lower()


def _load(url: str) -> _BusModule:
    scheme = scheme_of(url)
    entry = BUSES.get(scheme)
    if entry is None:
        raise UnknownBackendError(
            f"unknown bus {scheme!r} in {url!r}; valid buses: {', '.join(sorted(BUSES))}"
        )
    try:
        module: ModuleType = importlib.import_module(entry.module)
    except ModuleNotFoundError as err:
        if entry.client and err.name and err.name.split(".")[0] == entry.client:
            raise MissingExtraError(
                f"the {scheme} bus needs {entry.client}: pip install 'taskbus[{entry.extra}]'"
            ) from err
        raise
    return cast(_BusModule, module)


def open_consumer(
    url: str,
    *,
    topic: str,
    channel: str = "",
    prefetch: int = 1,
    credentials: Credentials | None = None,
) -> Consumer:
    """A consumer of ``topic`` on the bus ``url``, sharing work with others of ``channel``.

    No I/O happens here; the consumer connects on first use or in ``__aenter__``.

    Raises:
        ConfigError: unknown scheme, a malformed URL or option, a missing extra.
    """
    if not topic:
        raise ConfigError("a consumer needs a topic; set --topic (it defaults to the task type)")
    return _load(url).open_consumer(
        url, topic=topic, channel=channel or topic, prefetch=max(1, prefetch),
        credentials=credentials or Credentials(),
    )


def open_producer(url: str, *, credentials: Credentials | None = None) -> Producer:
    """A producer on the bus ``url``.

    Raises:
        ConfigError: unknown scheme, a malformed URL or option, a missing extra.
    """
    return _load(url).open_producer(url, credentials=credentials or Credentials())
