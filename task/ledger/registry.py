"""The closed registry of ledger backends, keyed by URL scheme (import strings, loaded lazily)."""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from task.errors import ConfigError, MissingExtraError, UnknownBackendError
from task.ledger.base import Ledger

__all__ = ["open_ledger", "LEDGERS"]

#: scheme -> (module, extra, client import)
LEDGERS: dict[str, tuple[str, str | None, str | None]] = {
    "memory": ("task.ledger.memory", None, None),
    "sqlite": ("task.ledger.sqlite", None, None),
    "cassandra": ("task.ledger.cassandra", "cassandra", "cassandra"),
}


class _LedgerModule(Protocol):
    def open_ledger(self, url: str) -> Ledger: ...


def open_ledger(url: str) -> Ledger:
    """The ledger at ``url`` (``memory:``, ``sqlite:PATH``, ``cassandra://h:p/keyspace``).

    No I/O happens here; the backend connects on first use.

    Raises:
        ConfigError: unknown scheme, malformed URL, or a missing extra.
    """
    scheme, sep, _ = url.partition(":")
    if not sep:
        raise ConfigError(f"ledger URL {url!r} has no scheme; use sqlite:PATH, memory: or cassandra://")
    entry = LEDGERS.get(scheme.lower())
    if entry is None:
        raise UnknownBackendError(
            f"unknown ledger {scheme!r} in {url!r}; valid ledgers: {', '.join(sorted(LEDGERS))}"
        )
    module_name, extra, client = entry
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if client and err.name and err.name.split(".")[0] == client:
            raise MissingExtraError(
                f"the {scheme} ledger needs {client}: pip install 'taskbus[{extra}]'"
            ) from err
        raise
    return cast(_LedgerModule, module).open_ledger(url)
