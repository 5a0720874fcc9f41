"""taskbus: small units of work as JSON tasks between taskmasters, a bus and workers."""

from __future__ import annotations

from task.errors import (
    BusError,
    ConfigError,
    InvalidTaskError,
    LedgerError,
    TaskError,
)
from task.result import Result, alert, completed, failed, failf, interrupted, warn
from task.task import Task
from task.worker import TaskContext, Worker, invalid_worker

__version__ = "0.1.0"

__all__ = [
    "Task",
    "Worker",
    "TaskContext",
    "invalid_worker",
    "Result",
    "completed",
    "failed",
    "failf",
    "warn",
    "alert",
    "interrupted",
    "TaskError",
    "InvalidTaskError",
    "ConfigError",
    "BusError",
    "LedgerError",
    "__version__",
]
