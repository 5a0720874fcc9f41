"""The README's examples, run as a reader would copy them.

Every ``python`` and ``toml`` block of the README is run or loaded here (``RUN`` names them by
their first line, and a test fails for a block it does not name); of the ``sh`` blocks, which
mostly need a broker, the tour's is run. A new example is either made runnable and added
here, or written as a ``sh`` block of commands.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from task import Task
from task.flow.loader import load_workflows

README = Path(__file__).resolve().parent.parent / "README.md"
TASKBUS = str(Path(sys.executable).parent / "taskbus")  # the venv's, never PATH's


def block(first_line: str, language: str) -> str:
    """The fenced ``language`` block of the README whose first line is ``first_line``."""
    for found in re.finditer(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL):
        if found.group(1).startswith(first_line):
            return found.group(1)
    raise AssertionError(f"no {language} block starting {first_line!r} in the README")


#: the venv's ``bin``, found from the running interpreter (never from this process's PATH)
VENV_BIN = Path(sys.executable).parent


def reader_env() -> dict[str, str]:
    """The environment of a reader who activated the venv on a fresh machine: its ``bin``
    first, then only the system directories (as ``.ci/run``), no TASK_* settings. PATH is
    set here, never read: the tour's shell lines find ``taskbus`` as the reader's shell does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    env.update(PATH=os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"]))
    return env


def run(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=reader_env(), capture_output=True, text=True, timeout=60, check=False)


#: the first line of every python and toml block of the README, each run or loaded below
RUN = {
    "python": ("# fetch.py", "# make_tasks.py", "# wait_for_it.py"),
    "toml": ("# taskbus.toml", "# cron.toml", "# workflows/etl.toml"),
}


def test_every_python_and_toml_example_is_run_here() -> None:
    for language, first_lines in RUN.items():
        blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)
        named = sorted(next(first for first in (*first_lines, b) if b.startswith(first)) for b in blocks)
        assert named == sorted(first_lines), f"{language} blocks not run by tests/test_readme.py"


def done_tasks(cwd: Path) -> list[Task]:
    return [Task.from_json(line) for line in (cwd / "taskbus-data" / "done.jsonl").read_bytes().splitlines()]


def test_the_tour_runs_its_worker_on_the_tasks_it_sends(tmp_path: Path) -> None:
    # Given the tour's worker module, when its commands run as a reader pastes them
    (tmp_path / "fetch.py").write_text(block("# fetch.py", "python"))
    tour = run(tmp_path, "bash", "-e", "-c", block('echo "a line to copy"', "sh"))
    assert tour.returncode == 0, tour.stderr
    # Then the file was copied and both done tasks say how it went
    assert (tmp_path / "fetched" / "a.txt").read_text() == "a line to copy\n"
    results = sorted((d.info, d.result, d.msg, d.meta) for d in done_tasks(tmp_path))
    assert results == [("a.txt", "complete", "copied 15 bytes", "bytes=15"),
                       ("missing.txt", "error", "no file missing.txt", "")]
    # And a second run of the worker does nothing: the reader resumes after what it finished
    again = run(tmp_path, TASKBUS, "worker", "fetch:FetchFile", "--max-in-progress", "10")
    assert again.returncode == 0, again.stderr
    assert len(done_tasks(tmp_path)) == 2


def test_the_client_example_gets_the_done_task_of_what_it_sent(tmp_path: Path) -> None:
    # Given the tour's worker following the file bus, as the README says to start it
    (tmp_path / "fetch.py").write_text(block("# fetch.py", "python"))
    (tmp_path / "a.txt").write_text("a line to copy\n")
    (tmp_path / "taskbus-data").mkdir()
    worker = subprocess.Popen([TASKBUS, "worker", "fetch:FetchFile", "--bus", "file:./taskbus-data/?follow=1"],
                              cwd=tmp_path, env=reader_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # When the example runs
        (tmp_path / "wait_for_it.py").write_text(block("# wait_for_it.py", "python"))
        done = run(tmp_path, sys.executable, "wait_for_it.py")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, worker_log = worker.communicate(timeout=30)
    # Then it prints what its comment says
    assert done.returncode == 0, done.stderr + worker_log.decode()
    assert done.stdout == "complete copied 15 bytes\n"


def test_the_workflow_example_loads_without_problems(tmp_path: Path) -> None:
    (tmp_path / "etl.toml").write_text(block("# workflows/etl.toml", "toml"))
    loaded = load_workflows(tmp_path)
    assert (loaded.problems, loaded.warnings, len(loaded.workflows)) == ([], [], 1)


def test_the_cron_example_is_a_valid_cron_file(tmp_path: Path) -> None:
    (tmp_path / "cron.toml").write_text(block("# cron.toml", "toml"))
    shown = run(tmp_path, TASKBUS, "cron", "-c", "cron.toml", "--show-config")
    assert shown.returncode == 0, shown.stderr
    assert 'timezone = "Europe/Paris"' in shown.stdout and shown.stdout.count("daily-report") == 1


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
