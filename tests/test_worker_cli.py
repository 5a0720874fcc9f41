"""``taskbus worker`` as a user runs it: Go-style workers, mistakes caught at start-up,
``--processes`` refused where it would double work and failing as cleanly as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from task import Task

TASKBUS = str(Path(sys.executable).parent / "taskbus")

GO_STYLE = '''
from task import Worker, completed

class Fetch(Worker):
    task_type = "fetch"

    def __init__(self, info):          # no super().__init__(): the Go way
        self.info = info

    async def do_task(self, ctx):
        with open("side-effects.log", "a") as log:
            log.write(self.info + "\\n")
        self.meta["bytes"] = ["42"]
        return completed("fetched %s", self.info)
'''

MISTAKES = '''
from task import Worker

NOT_A_WORKER = 42

class NoDoTask:
    pass

class ForgotDoTask(Worker):
    task_type = "x"
'''


def taskbus(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run([TASKBUS, *args], check=False, cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def write_tasks(path: Path, *infos: str) -> None:
    with path.open("ab") as out:
        for info in infos:
            out.write(Task.new("fetch", info, id=info).to_json() + b"\n")


def test_a_go_style_worker_finishes_its_tasks_and_a_rerun_repeats_none(tmp_path: Path) -> None:
    # Given a worker that never calls super().__init__ and two tasks on the file bus
    (tmp_path / "fetch_worker.py").write_text(GO_STYLE)
    (tmp_path / "data").mkdir()
    write_tasks(tmp_path / "data" / "fetch.jsonl", "a", "b")
    bus = "file:./data/?offset=1"
    # When the worker runs, then runs again after a third task arrives
    first = taskbus(tmp_path, "worker", "fetch_worker:Fetch", "--bus", bus)
    write_tasks(tmp_path / "data" / "fetch.jsonl", "c")
    second = taskbus(tmp_path, "worker", "fetch_worker:Fetch", "--bus", bus)
    # Then each run exits 0 without a traceback, and each task ran once with its meta kept
    for run in (first, second):
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    # and each run says at start what it runs where
    assert ("worker starting: worker=fetch_worker:Fetch type=fetch bus=file:./data/?offset=1 topic=fetch "
            "channel=fetch done_topic=done max_in_progress=1 status_port=off") in first.stderr
    assert (tmp_path / "side-effects.log").read_text().split() == ["a", "b", "c"]
    done = [Task.from_json(line) for line in (tmp_path / "data" / "done.jsonl").read_bytes().splitlines()]
    assert [(t.id, t.result, t.meta) for t in done] == [
        ("a", "complete", "bytes=42"), ("b", "complete", "bytes=42"), ("c", "complete", "bytes=42")]


@pytest.mark.parametrize(("attr", "says"), [
    ("NOT_A_WORKER", "is a int, not a class or callable"),
    ("NoDoTask", "has no do_task method"),
    ("ForgotDoTask", "does not implement do_task"),
])
def test_a_worker_that_cannot_work_is_one_line_and_exit_2_at_start_up(tmp_path: Path, attr: str, says: str) -> None:
    (tmp_path / "mistakes.py").write_text(MISTAKES)
    (tmp_path / "data").mkdir()
    write_tasks(tmp_path / "data" / "x.jsonl", "a")
    run = taskbus(tmp_path, "worker", f"mistakes:{attr}", "--type", "x", "--bus", "file:./data/")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr
    assert not (tmp_path / "data" / "done.jsonl").exists()  # no task was touched


@pytest.mark.parametrize("bus", ["file:./data/", "memory:shared"])
def test_processes_on_a_bus_each_process_reads_in_full_is_refused(tmp_path: Path, bus: str) -> None:
    run = taskbus(tmp_path, "worker", "nop", "--type", "x", "--bus", bus, "--processes", "2")
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "--processes 2 cannot share" in run.stderr


def test_processes_report_a_missing_extra_as_one_line_like_one_process(tmp_path: Path) -> None:
    # Given a machine without aiokafka (hidden from every process by sitecustomize)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['aiokafka'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")]))}
    args = ["worker", "nop", "--type", "x", "--bus", "kafka://127.0.0.1:1"]
    single = taskbus(tmp_path, *args, env=env)
    several = taskbus(tmp_path, *args, "--processes", "2", env=env)
    assert single.returncode == several.returncode == 2
    assert single.stderr == several.stderr and single.stderr.count("\n") == 1
    assert "pip install 'taskbus[kafka]'" in several.stderr
