"""The ``taskbus`` command as a user types it: exit codes, settings precedence, workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from task import Task
from task.bus.file_options import parse_offset
from task.ledger import open_ledger


def taskbus(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "task.cli", *args], check=False, cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.Popen([sys.executable, "-m", "task.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []


def test_help_lists_commands_and_version_prints(tmp_path: Path) -> None:
    out = taskbus("--help", cwd=tmp_path)
    assert out.returncode == 0 and "worker" in out.stdout and "quickstart" in out.stdout
    assert taskbus("--version", cwd=tmp_path).stdout.startswith("taskbus ")
    assert taskbus("worker", "--version", cwd=tmp_path).stdout.startswith("taskbus ")


@pytest.mark.parametrize(
    ("args", "files", "expected"),
    [
        (["worker", "nop", "--bus", "kafak://h:1"], {}, "unknown bus 'kafak'"),
        (["worker", "nop", "--bus", "nats://h:port"], {}, "port 'port'"),
        (["worker", "no_such_module:Worker"], {}, "cannot import 'no_such_module'"),
        (["worker", "os:nothing_here"], {}, "has no attribute 'nothing_here'"),
        (["worker", "nop", "-c", "bad.toml"], {"bad.toml": "max_in_progress = = 3"}, "not valid TOML"),
        (["worker", "nop", "-c", "w.toml"], {"w.toml": "max_inprogress = 3"}, "did you mean 'max_in_progress'"),
        (["worker", "nop", "-c", "missing.toml"], {}, "not found"),
        (["worker", "nop", "--max-in-progress", "lots"], {}, "'max_in_progress'"),
        (["worker", "nop", "--ledger", "postgres://x"], {}, "unknown ledger 'postgres'"),
        (["worker", "nop", "--bus", "file:./x/?folow=1"], {}, "unknown option 'folow'"),
        (["worker", "--no-such-flag"], {}, "unrecognized arguments"),
        (["frobnicate"], {}, "unknown command 'frobnicate'; commands: worker, send"),
        (["wroker"], {}, "unknown command 'wroker'; did you mean 'worker'?"),
        (["worker", "nop", "--task-timeout", "soon"], {}, "'soon' is not a duration; use e.g. 250ms, 30s"),
        (["worker", "nop", "-c", "w.toml"], {"w.toml": 'worker_kill_time = "a minute"'}, "'worker_kill_time'"),
        (["worker", "nop", "-c", "w.toml"], {"w.toml": "[wroker]\nlifetime = 1"}, "did you mean 'worker'?"),
        (["retry", "-c", "r.toml"], {"r.toml": '[[rule]]\ntype = "a"\ndlay = 3'},
         "unknown key 'dlay' in rule 1; did you mean 'delay'? keys: type, count, delay"),
        (["send"], {}, "usage: taskbus send TYPE INFO"),
        (["send", "t", "i", "--meta", "novalue"], {}, "must be key=value"),
    ],
)
def test_a_user_mistake_is_one_clear_line_and_exit_2(
    tmp_path: Path, args: list[str], files: dict[str, str], expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = taskbus(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_gen_config_is_valid_toml_that_loads_back(tmp_path: Path) -> None:
    out = taskbus("worker", "--gen-config", cwd=tmp_path)
    assert out.returncode == 0
    config = tomllib.loads(out.stdout)
    assert config["max_in_progress"] == 1 and config["done_topic"] == "done"
    (tmp_path / "w.toml").write_text(out.stdout)
    shown = taskbus("worker", "nop", "-c", "w.toml", "--show-config", cwd=tmp_path)
    assert shown.returncode == 0 and tomllib.loads(shown.stdout)["worker"] == "nop"


def test_settings_precedence_is_toml_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "w.toml").write_text('max_in_progress = 3\ntopic = "from-toml"\ndone_topic = "toml-done"\n')
    env = {"TASK_MAX_IN_PROGRESS": "5", "TASK_TOPIC": "from-env"}
    out = taskbus("worker", "nop", "-c", "w.toml", "--topic", "from-flag", "--show-config", cwd=tmp_path, env=env)
    shown = tomllib.loads(out.stdout)
    assert (shown["max_in_progress"], shown["topic"], shown["done_topic"]) == (5, "from-flag", "toml-done")


def test_a_worker_table_in_the_config_file_is_applied_and_durations_take_units(tmp_path: Path) -> None:
    # Given one file for two commands, the worker's settings in its own table
    (tmp_path / "taskbus.toml").write_text(
        'done_topic = "finished"\n[worker]\nmax_in_progress = 3\nworker_kill_time = "1m"\n'
        '[retry]\npoll_interval = "2s"\n')
    out = taskbus("worker", "nop", "-c", "taskbus.toml", "--task-timeout", "30s", "--show-config",
                  cwd=tmp_path, env={"TASK_HEARTBEAT_INTERVAL": "500ms"})
    assert out.returncode == 0, out.stderr
    shown = tomllib.loads(out.stdout)
    # Then the [worker] table is applied (it used to be dropped silently), [retry] is skipped
    assert (shown["max_in_progress"], shown["done_topic"]) == (3, "finished")
    assert (shown["worker_kill_time"], shown["task_timeout"], shown["heartbeat_interval"]) == ("1m", "30s", "500ms")


def test_help_shows_each_default(tmp_path: Path) -> None:
    out = taskbus("worker", "--help", cwd=tmp_path)
    flat = " ".join(out.stdout.split())
    assert "tasks run at once (also the prefetch) (default: 1)" in flat
    assert "on shutdown, e.g. 10s (default: 10s)" in flat


def test_send_without_info_warns_in_one_line_and_still_sends(tmp_path: Path) -> None:
    out = taskbus("send", "nop", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "WARNING" in out.stderr and "no INFO given" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    (sent,) = lines(tmp_path / "taskbus-data" / "nop.jsonl")
    assert (sent["type"], sent["info"]) == ("nop", "")


def test_show_config_masks_secrets(tmp_path: Path) -> None:
    out = taskbus("worker", "nop", "--bus", "nats://ann:hunter2@127.0.0.1:4222", "--show-config",
                  cwd=tmp_path, env={"TASK_BUS_PASSWORD": "s3cret", "TASK_BUS_TOKEN": "tok"})
    assert "hunter2" not in out.stdout and "s3cret" not in out.stdout and "tok\"" not in out.stdout
    assert 'bus_password = "***"' in out.stdout and "nats://ann:***@127.0.0.1:4222" in out.stdout


def test_send_then_worker_on_the_file_bus(tmp_path: Path) -> None:
    sent = taskbus("send", "nop", "hello", "--meta", "a=1", "--ledger", "sqlite:./taskbus-data/ledger.db", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    task = Task.from_json(sent.stdout.strip())
    assert (task.type, task.info, task.meta) == ("nop", "hello", "a=1")
    run = taskbus("worker", "nop", "--ledger", "sqlite:./taskbus-data/ledger.db", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (done,) = lines(tmp_path / "taskbus-data" / "done.jsonl")
    assert done["id"] == task.id and done["result"] == "complete"
    assert asyncio.run(_outstanding(f"sqlite:{tmp_path}/taskbus-data/ledger.db", "nop")) == []


async def _outstanding(url: str, task_list: str) -> list[str]:
    ledger = open_ledger(url)
    try:
        return [r.task.id async for r in ledger.outstanding(task_list, older_than=0)]
    finally:
        await ledger.close()


def test_malformed_lines_among_tasks_are_counted_and_dead_lettered(tmp_path: Path) -> None:
    data = tmp_path / "taskbus-data"
    data.mkdir()
    valid = [Task.new("hello", f"n{i}") for i in range(6)]
    garbage = [b"\x00\xff\xfebinary", b"[1,2,3]", b'{"type": 5}', b"null", b"x" * (10 * 1024 * 1024)]
    body = b""
    for i, task in enumerate(valid):
        body += task.to_json() + b"\n"
        if i < len(garbage):
            body += garbage[i] + b"\n"
    (data / "hello.jsonl").write_bytes(body)
    run = taskbus("worker", "nop", "--type", "hello", "--dead-letter-topic", "dead", "--max-in-progress", "3", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(d["id"] for d in lines(data / "done.jsonl")) == sorted(t.id for t in valid)
    letters = lines(data / "dead.jsonl")
    assert len(letters) == 5
    assert letters[0]["body_b64"] and [d.get("body") for d in letters[1:4]] == ["[1,2,3]", '{"type": 5}', "null"]
    assert letters[4]["truncated"] is True and letters[4]["body"].startswith("xxxx")


def test_file_bus_resumes_from_its_offset_after_a_kill(tmp_path: Path) -> None:
    data = tmp_path / "taskbus-data"
    data.mkdir()
    tasks = [Task.new("nop", "sleep=100ms") for _ in range(30)]
    (data / "nop.jsonl").write_bytes(b"".join(t.to_json() + b"\n" for t in tasks))
    url = "file:./taskbus-data/?offset=1"
    worker = start("worker", "nop", "--bus", url, "--max-in-progress", "2", cwd=tmp_path)
    deadline = time.monotonic() + 30
    while len(lines(data / "done.jsonl")) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    before = len(lines(data / "done.jsonl"))
    assert 6 <= before < 30
    again = taskbus("worker", "nop", "--bus", url, "--max-in-progress", "4", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    done_ids = [d["id"] for d in lines(data / "done.jsonl")]
    assert set(done_ids) == {t.id for t in tasks}  # every task done at least once
    assert len(done_ids) - 30 <= 2  # at most the two in flight at the kill ran twice


def test_sigterm_lets_in_flight_tasks_finish_and_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "taskbus-data"
    data.mkdir()
    tasks = [Task.new("nop", "sleep=500ms") for _ in range(20)]
    (data / "nop.jsonl").write_bytes(b"".join(t.to_json() + b"\n" for t in tasks))
    worker = start("worker", "nop", "--max-in-progress", "4", "--bus", "file:./taskbus-data/?offset=1", cwd=tmp_path)
    deadline = time.monotonic() + 30
    while not lines(data / "done.jsonl") and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    done = lines(data / "done.jsonl")
    assert 4 <= len(done) < 20
    # the nop worker honours ctx.stopping: tasks in flight at SIGTERM end early as interrupted
    outcomes = {(d["result"], d.get("msg", "")) for d in done}
    assert outcomes <= {("complete", ""), ("error", "task interrupted")}
    assert ("error", "task interrupted") in outcomes
    offset = parse_offset((data / "nop.jsonl.nop.offset").read_text()).offset
    assert offset == sum(len(t.to_json()) + 1 for t in tasks[: len(done)])  # resumes right after


def test_quickstart_runs_on_a_fresh_directory(tmp_path: Path) -> None:
    out = taskbus("quickstart", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("complete said hello to") == 10
    assert "0 hello task(s) outstanding" in out.stdout
    assert (tmp_path / "taskbus-data" / "ledger.db").exists()


def test_a_bus_that_cannot_be_reached_is_one_line_and_exit_1(tmp_path: Path) -> None:
    from tests.servers.ports import free_port

    out = taskbus("worker", "nop", "--bus", f"nats://ann:hunter2@127.0.0.1:{free_port()}", cwd=tmp_path, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "hunter2" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("taskbus: ")


def test_progress_counts_on_a_terminal_and_writes_tenths_elsewhere() -> None:
    import io

    from task.progress import Progress

    log = io.StringIO()
    bar = Progress(20, log, label="batch")
    for _ in range(20):
        bar.advance()
    bar.close()
    assert log.getvalue().splitlines() == [f"batch: {n}/20 tasks" for n in range(2, 21, 2)]
