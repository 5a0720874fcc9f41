"""Task results and the helpers a worker returns them with.

A worker reports its outcome as a value, ``(Result, msg)``, never by raising; the helpers
mirror the Go toolkit's ``task.Completed``, ``task.Failed`` and friends.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Outcome",
    "Result",
    "alert",
    "completed",
    "failed",
    "failf",
    "interrupted",
    "warn",
]


class Result(StrEnum):
    """The four results the Go toolkit knows. A task may carry any other string unchanged."""

    COMPLETE = "complete"
    ERROR = "error"
    WARN = "warn"
    ALERT = "alert"


#: What ``Worker.do_task`` returns: the result and a human-readable message.
Outcome = tuple[Result | str, str]


def _format(msg: str, args: tuple[object, ...]) -> str:
    return msg % args if args else msg


def completed(msg: str = "", *args: object) -> Outcome:
    """The task succeeded; ``msg % args`` when args are given."""
    return Result.COMPLETE, _format(msg, args)


def failed(err: object = "", *args: object) -> Outcome:
    """The task failed; ``err`` may be an exception or a format string."""
    text = str(err) if isinstance(err, BaseException) else _format(str(err), args)
    return Result.ERROR, text


def failf(msg: str, *args: object) -> Outcome:
    """The task failed, with a formatted message (Go's ``task.Failf``)."""
    return Result.ERROR, _format(msg, args)


def warn(msg: str = "", *args: object) -> Outcome:
    """The task finished but something needs a look."""
    return Result.WARN, _format(msg, args)


def alert(msg: str = "", *args: object) -> Outcome:
    """The task finished and somebody must be told now."""
    return Result.ALERT, _format(msg, args)


def interrupted() -> Outcome:
    """The task stopped early because the launcher is shutting down or the task timed out."""
    return Result.ERROR, "task interrupted"
