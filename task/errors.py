"""The one tree of taskbus errors.

Business outcomes are values (a worker returns ``(Result, msg)``); these exceptions are for
things that went wrong around the work: bad input, bad configuration, a bus or ledger failure.
"""

from __future__ import annotations

__all__ = [
    "BusClosedError",
    "BusError",
    "ConfigError",
    "InvalidTaskError",
    "LedgerError",
    "MissingExtraError",
    "TaskError",
    "UnknownBackendError",
]


class TaskError(Exception):
    """Root of every error taskbus raises on purpose."""


class InvalidTaskError(TaskError, ValueError):
    """Raised when bytes are not a task: bad JSON, not an object, no string ``type``, a bad time."""


class ConfigError(TaskError, ValueError):
    """Raised when a setting, URL or option is wrong; the message says what to change."""


class UnknownBackendError(ConfigError):
    """Raised when a URL names a scheme no bus or ledger is registered for."""


class MissingExtraError(ConfigError):
    """Raised when a backend needs a client library that is not installed; names the extra."""


class BusError(TaskError):
    """Raised when a bus cannot connect, send or receive."""


class BusClosedError(BusError):
    """Raised when a producer or consumer is used after ``stop()``."""


class LedgerError(TaskError):
    """Raised when the ledger's database cannot be reached or refuses a write."""
