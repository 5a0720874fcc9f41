"""Small pieces every ledger backend shares: task lists, times, the task-without-id rule."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from task.task import Task

__all__ = ["epoch", "list_of", "resendable"]

logger = logging.getLogger(__name__)


def list_of(task: Task, task_list: str | None) -> str:
    """The task list a task is recorded under: ``task_list``, else the task's type."""
    return task_list or task.type


def epoch(at: datetime) -> float:
    """Unix seconds of ``at``; a naive datetime is taken as UTC, as the wire format's times are."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def resendable(task: Task) -> Task:
    """A copy of ``task`` as a taskmaster sends it: no outcome and no start time, so a worker
    that gets it again starts clean."""
    return task.copy(result="", msg="", started="", ended="")
