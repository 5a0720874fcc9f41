"""Small pieces every ledger backend shares: task lists, times, the task-without-id rule."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from task.task import Task

__all__ = ["SkipsTasksWithoutId", "epoch", "list_of", "resendable"]

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


class SkipsTasksWithoutId:
    """The task-without-id rule of every ledger: records are keyed by id, so a task given
    without one is counted in ``skipped_no_id`` and not recorded (it still runs)."""

    #: tasks given without an id: counted, never recorded
    skipped_no_id: int = 0

    def _no_id(self, task: Task) -> bool:
        """True, after counting it, when ``task`` has no id and is not to be recorded."""
        if task.id:
            return False
        self.skipped_no_id += 1
        logger.debug("task of type %r has no id: not recorded", task.type)
        return True
