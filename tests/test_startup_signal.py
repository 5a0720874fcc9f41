"""A SIGTERM or SIGINT that reaches ``taskbus worker`` while it starts (imports, settings,
connects) is a clean stop: exit 0, no task run, one log line; never status 143.

No timing: the worker module itself sends the signal at a chosen point of the start-up
(while ``resolve_worker`` imports it, or inside its async ``setup()``), so every run hits the
same moment however loaded the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from task import Task

#: the installed console script, exactly what a supervisor starts (never a PATH lookup)
TASKBUS = Path(sys.executable).parent / "taskbus"

#: a worker that leaves a trace of every task it runs, so "no task ran" is checked directly
WORKER = """
import asyncio
import os
import signal
from pathlib import Path

from task import Worker, completed


class W(Worker):
    task_type = "early"

    async def do_task(self, ctx):
        with open(Path("ran.txt"), "a") as trace:
            trace.write(self.info + "\\n")
        return completed()
"""


def run_worker(tmp_path: Path, module: str, source: str, tasks: int = 3) -> subprocess.CompletedProcess[str]:
    """Given ``tasks`` waiting on the file bus, run ``taskbus worker MODULE:W`` to its end."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    bus = tmp_path / "bus"
    bus.mkdir()
    (bus / "early.jsonl").write_bytes(b"".join(Task.new("early", f"t{i}").to_json() + b"\n" for i in range(tasks)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run([str(TASKBUS), "worker", f"{module}:W", "--bus", "file:./bus/"], check=False, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)


def ran(tmp_path: Path) -> list[str]:
    trace = tmp_path / "ran.txt"
    return trace.read_text().split() if trace.exists() else []


def done(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "bus" / "done.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_worker_module_is_imported_is_a_clean_exit(tmp_path: Path, sig: signal.Signals) -> None:
    # Given a worker module whose import is where the signal lands (a slow import, a supervisor
    # giving up on the start-up), and three tasks waiting
    source = WORKER + f"\nos.kill(os.getpid(), signal.{sig.name})\n"
    # When the worker starts
    out = run_worker(tmp_path, "killed_on_import", source)
    # Then it exits 0 before running any task, and says why in one line
    assert out.returncode == 0, out.stderr
    assert ran(tmp_path) == [] and done(tmp_path) == []
    assert f"{sig.name} received while starting: exiting before the first task" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_signal_while_the_worker_sets_up_stops_it_before_any_task(tmp_path: Path) -> None:
    # Given a worker whose setup() is interrupted: the signal comes while it awaits (as a
    # setup connecting a pool does); the loop's handlers run before setup() goes on
    source = WORKER + """
    @classmethod
    async def setup(cls):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.01)  # stands for the connect a real setup() awaits
"""
    out = run_worker(tmp_path, "killed_in_setup", source)
    # Then the stop reaches the launcher before its first task: exit 0, nothing run
    assert out.returncode == 0, out.stderr
    assert ran(tmp_path) == [] and done(tmp_path) == []
    assert "signal received: stopping" in out.stderr


def test_a_second_signal_while_starting_exits_1_at_once(tmp_path: Path) -> None:
    # Given a start-up that does not finish (here: a second signal in the same import)
    source = WORKER + "\nos.kill(os.getpid(), signal.SIGTERM)\nos.kill(os.getpid(), signal.SIGTERM)\n"
    out = run_worker(tmp_path, "killed_twice", source)
    # Then the second signal ends it at once, as a second signal does while running
    assert out.returncode == 1, out.stderr
    assert ran(tmp_path) == []


def test_the_command_catches_signals_before_any_heavy_import() -> None:
    # The handlers are installed by main(); whatever is imported before it runs is a window in
    # which a SIGTERM still kills the process. pydantic alone triples it, the bus clients more.
    code = (
        "import sys\n"
        "import task.cli\n"
        "heavy = ('pydantic', 'pydantic_settings', 'aiokafka', 'nats', 'prometheus_client', 'task.settings')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_main_in_process_puts_the_callers_signal_handlers_back() -> None:
    from task.cli import main

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["--version"]) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
