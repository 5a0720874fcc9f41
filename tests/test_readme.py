"""The README's examples, run as a reader would copy them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from task import Task

README = Path(__file__).resolve().parent.parent / "README.md"
TASKBUS = str(Path(sys.executable).parent / "taskbus")


def block(first_line: str, language: str) -> str:
    """The fenced ``language`` block of the README whose first line is ``first_line``."""
    for found in re.finditer(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL):
        if found.group(1).startswith(first_line):
            return found.group(1)
    raise AssertionError(f"no {language} block starting {first_line!r} in the README")


def run(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_send_from_python_example_sends_its_tasks(tmp_path: Path) -> None:
    (tmp_path / "make_tasks.py").write_text(block("# make_tasks.py", "python"))
    done = run(tmp_path, sys.executable, "make_tasks.py")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "taskbus-data" / "fetch-file.jsonl").read_bytes().splitlines()
    tasks = [Task.from_json(line) for line in lines]
    assert [(t.type, t.info, t.meta) for t in tasks] == [
        ("fetch-file", "s3://bucket/2024-01-30/a.gz", "source=python"),
        ("fetch-file", "s3://bucket/2024-01-31/a.gz", "source=python"),
    ]


def test_one_toml_file_configures_the_worker_and_retry(tmp_path: Path) -> None:
    (tmp_path / "taskbus.toml").write_text(block("# taskbus.toml", "toml"))
    worker = run(tmp_path, TASKBUS, "worker", "nop", "--type", "fetch-file", "-c", "taskbus.toml", "--show-config")
    assert worker.returncode == 0, worker.stderr
    assert "max_in_progress = 20" in worker.stdout and 'task_timeout = "5m"' in worker.stdout
    assert 'bus = "jetstream://127.0.0.1:4222"' in worker.stdout
    retry = run(tmp_path, TASKBUS, "retry", "-c", "taskbus.toml", "--show-config")
    assert retry.returncode == 0, retry.stderr
    assert '{type = "fetch-file", count = 3, delay = 30.0' in retry.stdout and 'ledger = "sqlite:./taskbus-data/ledger.db"' in retry.stdout
