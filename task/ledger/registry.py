"""The closed registry of ledger backends, keyed by URL scheme (import strings, loaded lazily)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol, cast

from task.errors import ConfigError, MissingExtraError, UnknownBackendError
from task.ledger.base import Ledger

__all__ = ["LEDGERS", "backend_module", "open_ledger"]

#: scheme -> (module, extra, client import)
LEDGERS: dict[str, tuple[str, str | None, str | None]] = {
    "memory": ("task.ledger.memory", None, None),
    "sqlite": ("task.ledger.sqlite", None, None),
    "cassandra": ("task.ledger.cassandra", "cassandra", "cassandra"),
}


#: backends that create their storage on first use, and so take ``create=False`` for a
#: read-only look (Cassandra never creates: its tables come from ``taskbus ledger init``)
_CREATES_ON_USE = frozenset({"sqlite"})


class _LedgerModule(Protocol):
    def open_ledger(self, url: str) -> Ledger: ...


class _CreatingLedgerModule(Protocol):
    def open_ledger(self, url: str, *, create: bool = True) -> Ledger: ...


def open_ledger(url: str, *, create: bool = True) -> Ledger:
    """The ledger at ``url`` (``memory:``, ``sqlite:PATH``, ``cassandra://h:p/keyspace``).

    No I/O happens here; the backend connects on first use. ``create=False`` is for commands
    that only read (``taskbus ledger ls``): a ledger that does not exist is then an error
    at first use (ConfigError naming it) instead of being created empty.

    Raises:
        ConfigError: unknown scheme, malformed URL, or a missing extra.
    """
    scheme, module = backend_module(url, LEDGERS, "ledger", "ledgers")
    if scheme in _CREATES_ON_USE:
        return cast(_CreatingLedgerModule, module).open_ledger(url, create=create)
    return cast(_LedgerModule, module).open_ledger(url)


def backend_module(
    url: str, backends: dict[str, tuple[str, str | None, str | None]], what: str, whats: str
) -> tuple[str, ModuleType]:
    """The lower-case scheme of ``url`` and the module of its backend in ``backends`` (scheme
    -> (module, extra, client import)), imported now. ``what`` names the kind of backend in
    the errors (``ledger``, ``task store``), ``whats`` its plural.

    Raises:
        ConfigError: no scheme, an unknown one, or a backend whose extra is not installed.
    """
    scheme, sep, _ = url.partition(":")
    if not sep:
        raise ConfigError(f"{what} URL {url!r} has no scheme; use sqlite:PATH, memory: or cassandra://")
    entry = backends.get(scheme.lower())
    if entry is None:
        raise UnknownBackendError(
            f"unknown {what} {scheme!r} in {url!r}; valid {whats}: {', '.join(sorted(backends))}"
        )
    module_name, extra, client = entry
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if client and err.name and err.name.split(".")[0] == client:
            raise MissingExtraError(
                f"the {scheme} {what} needs {client}: pip install 'taskbus[{extra}]'"
            ) from err
        raise
    return scheme.lower(), module
