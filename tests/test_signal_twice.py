"""A stop signal delivered twice at once is one stop; a second, different or later signal
still exits at once.

A supervisor that forwards signals (``timeout``, ``uv run``) to a process that also gets
them from its process group (a terminal's Ctrl-C, ``kill -- -PGID``) delivers one stop
twice; the worker used to take the copy for a second signal and exit without finishing.
No timing: the worker's task sends the signals itself, at a chosen point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from task import Task

#: the installed console script, exactly what a supervisor starts (never a PATH lookup)
TASKBUS = Path(sys.executable).parent / "taskbus"

WORKER = """
import asyncio
import os
import signal

import task.cli
from task import Worker, completed


class W(Worker):
    task_type = "twice"

    async def do_task(self, ctx):
        {send}
        await asyncio.sleep(0.05)  # the handlers run; a second signal would end us here
        with open("done.txt", "a") as trace:
            trace.write(self.info + "\\n")
        return completed()
"""


def run(tmp_path: Path, send: str) -> subprocess.CompletedProcess[str]:
    """Given one task on the file bus, run a worker whose task sends ``send`` to itself."""
    (tmp_path / "twice.py").write_text(textwrap.dedent(WORKER).replace("{send}", send))
    bus = tmp_path / "bus"
    bus.mkdir()
    (bus / "twice.jsonl").write_bytes(Task.new("twice", "t0").to_json() + b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run(
        [str(TASKBUS), "worker", "twice:W", "--bus", "file:./bus/?follow=1", "--log-level", "debug"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


def test_the_same_signal_twice_at_once_is_one_clean_stop(tmp_path: Path) -> None:
    # When a SIGTERM arrives twice at once (a process group's and a supervisor's copy)
    result = run(tmp_path, "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGTERM)")
    # Then the worker stops once, cleanly: its running task finished and it exits 0
    assert "second signal" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "done.txt").read_text().split() == ["t0"]
    assert "stopped: 1 tasks finished" in result.stderr


@pytest.mark.parametrize("send", [
    # a different signal: Ctrl-C after a SIGTERM means "now"
    "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT)",
    # the same signal again later than SAME_STOP_WITHIN (here: no window at all)
    ("os.kill(os.getpid(), signal.SIGTERM); await asyncio.sleep(0.01); task.cli.SAME_STOP_WITHIN = 0; "
     "os.kill(os.getpid(), signal.SIGTERM)"),
])
def test_a_second_signal_still_exits_at_once(tmp_path: Path, send: str) -> None:
    result = run(tmp_path, send)
    assert "second signal: exiting now" in result.stderr, result.stderr[-2000:]
    assert result.returncode == 1
    assert not (tmp_path / "done.txt").exists()  # it did not wait for the task
