"""taskbus: small units of work as JSON tasks between taskmasters, a bus and workers.

The settings models (``WorkerSettings``, ``BusSettings``, ``AppSettings``, ``load_settings``)
live in ``task.settings`` and are not re-exported here: they need pydantic, which would
triple the time ``import task`` takes, and ``taskbus`` imports this package before it can
catch a SIGTERM sent while it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from task.errors import (
    BusError,
    ConfigError,
    InvalidTaskError,
    LedgerError,
    TaskError,
)
from task.launcher import Launcher, LauncherOptions
from task.result import Result, alert, completed, failed, failf, interrupted, warn
from task.task import Task
from task.worker import TaskContext, Worker, invalid_worker

if TYPE_CHECKING:
    from task.client import Client


def __getattr__(name: str) -> object:
    """``task.Client`` imported on first use: it pulls in the bus registry, the ledger and the
    delayed-task code, which ``import task`` (and ``taskbus --help``) should not pay for."""
    if name == "Client":
        from task.client import Client

        return Client
    raise AttributeError(f"module 'task' has no attribute {name!r}")

__version__ = "0.2.0"

__all__ = [
    "BusError",
    "Client",
    "ConfigError",
    "InvalidTaskError",
    "Launcher",
    "LauncherOptions",
    "LedgerError",
    "Result",
    "Task",
    "TaskContext",
    "TaskError",
    "Worker",
    "__version__",
    "alert",
    "completed",
    "failed",
    "failf",
    "interrupted",
    "invalid_worker",
    "warn",
]
