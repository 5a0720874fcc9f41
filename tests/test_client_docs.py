"""docs/client.md's examples, run as a reader would copy them."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "client.md"
TASKBUS = str(Path(sys.executable).parent / "taskbus")


def block(first_line: str, language: str) -> str:
    """The fenced ``language`` block of the page whose first line is ``first_line``."""
    for found in re.finditer(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL):
        if found.group(1).startswith(first_line):
            return found.group(1)
    raise AssertionError(f"no {language} block starting {first_line!r} in {DOC.name}")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}


def run(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60, check=False)


def test_the_client_examples_get_the_done_tasks_of_a_running_worker(tmp_path: Path) -> None:
    mkdir, worker_line = block("mkdir -p taskbus-data", "sh").strip().splitlines()
    assert mkdir == "mkdir -p taskbus-data"
    (tmp_path / "taskbus-data").mkdir()
    command = shlex.split(worker_line)
    assert command[0] == "taskbus"
    worker = subprocess.Popen([TASKBUS, *command[1:]], cwd=tmp_path, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        (tmp_path / "client_demo.py").write_text(block("# client_demo.py", "python"))
        demo = run(tmp_path, sys.executable, "client_demo.py")
        assert demo.returncode == 0, demo.stderr
        assert demo.stdout.startswith("True complete 20"), demo.stdout

        (tmp_path / "client_sync_demo.py").write_text(block("# client_sync_demo.py", "python"))
        sync = run(tmp_path, sys.executable, "client_sync_demo.py")
        assert sync.returncode == 0, sync.stderr
        assert sync.stdout == "complete\n"
    finally:
        worker.terminate()
        _, errors = worker.communicate(timeout=30)
    assert worker.returncode == 0, errors
    assert (tmp_path / "taskbus-data" / "ledger.db").exists()


def test_the_testing_example_passes(tmp_path: Path) -> None:
    (tmp_path / "test_upper.py").write_text(block("# test_upper.py", "python"))
    done = run(tmp_path, sys.executable, "-c", "import test_upper; test_upper.test_upper(); print('ok')")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
