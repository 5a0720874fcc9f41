"""taskbus: small units of work as JSON tasks between taskmasters, a bus and workers.

The settings models (``WorkerSettings``, ``BusSettings``, ``AppSettings``, ``load_settings``)
live in ``task.settings`` and are not re-exported here: they need pydantic, which would
triple the time ``import task`` takes, and ``taskbus`` imports this package before it can
catch a SIGTERM sent while it starts.
"""

from __future__ import annotations

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

__version__ = "0.2.0"

__all__ = [
    "BusError",
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
