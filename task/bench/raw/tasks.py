"""What the raw loops publish and send back: the backlog and the done message.

The done message is built as the peer harness (``../shared/bench/benchlib.py``) builds it:
orjson decodes the task, the no-op runs between two ``time.time()`` stamps, a copy gets
result, msg, started and ended, orjson encodes it. That is what a user who knows the client
would write by hand; it keeps none of the Go format's rules (times stay floats).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from task.errors import BusError
from task.task import Task

__all__ = ["STALL_SECONDS", "backlog", "done_body", "stalled"]

#: a raw loop that gets no message for this long gives up (lost messages, a broken server)
STALL_SECONDS = 30.0


def backlog(n: int) -> list[bytes]:
    """``n`` no-op tasks with ids ``raw-0`` …, the size of the Launcher run's tasks."""
    return [Task.new("nop", "", id=f"raw-{i}").to_json() for i in range(n)]


def _noop(task: dict[str, Any]) -> None:
    """The task under test: does nothing."""


def done_body(data: bytes) -> bytes:
    """The done message for the task in ``data``, encoded."""
    task = orjson.loads(data)
    started = time.time()
    _noop(task)
    ended = time.time()
    done = dict(task)
    done["result"] = "complete"
    done["msg"] = ""
    done["started"] = started
    done["ended"] = ended
    return orjson.dumps(done)


def stalled(bus: str, handled: int, n: int) -> BusError:
    """The error of a raw loop that waited ``STALL_SECONDS`` without a message."""
    return BusError(
        f"raw {bus} loop: no message for {STALL_SECONDS:.0f} s after {handled} of {n} tasks; "
        "is the server healthy?"
    )
