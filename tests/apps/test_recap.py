"""The recap app: figures per type on a known input, from files and from a bus."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.apps.recap import RecapApp, RecapSettings
from task.bus.memory import MemoryBroker, MemoryConsumer
from task.cli import run_command
from task.errors import ConfigError
from task.settings import load_settings
from task.task import Task
from tests.apps.status import get_stats
from tests.servers.ports import free_port

T0 = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


def done(task_type: str, result: str, seconds: float, msg: str = "", id: str = "") -> bytes:
    task = Task.new(task_type, "info", id=id or None)
    task.start(T0)
    task.end(result, msg, T0 + timedelta(seconds=seconds))
    return task.to_json()


#: fetch: 2 complete (2 s, 4 s), 3 errors (1 s, 6 s, 9 s), 1 warn (3 s); load: 1 odd result
KNOWN = [
    done("fetch", "complete", 2),
    done("fetch", "error", 1, "timeout", id="e1"),
    done("fetch", "complete", 4),
    done("fetch", "error", 6, "refused", id="e2"),
    done("fetch", "warn", 3),
    done("fetch", "error", 9, "disk full", id="e3"),
    done("load", "skipped", 0),
    b'{"type": ""}',
    b"garbage",
]


@pytest.fixture
def known_file(tmp_path: Path) -> Path:
    path = tmp_path / "done.jsonl"
    path.write_bytes(b"\n".join(KNOWN) + b"\n\n")
    return path


async def test_figures_on_a_known_input_as_json(known_file: Path) -> None:
    out = io.StringIO()
    assert await RecapApp(files=[str(known_file)], errors=2, as_json=True, out=out).run() == 0
    report = json.loads(out.getvalue())
    assert (report["tasks"], report["invalid"]) == (7, 2)
    fetch = report["types"]["fetch"]
    assert fetch["results"] == {"complete": 2, "error": 3, "warn": 1}
    assert list(fetch["results"]) == ["complete", "error", "warn"]
    assert fetch["duration_s"] == {"min": 1.0, "mean": 4.167, "max": 9.0, "timed": 6}  # 25/6
    assert [e["id"] for e in fetch["last_errors"]] == ["e2", "e3"]  # the last two of three
    assert fetch["last_errors"][-1]["msg"] == "disk full"
    assert report["types"]["load"]["results"] == {"skipped": 1}


async def test_text_report_names_every_figure(known_file: Path) -> None:
    out = io.StringIO()
    await RecapApp(files=[str(known_file)], out=out).run()
    text = out.getvalue()
    assert "fetch: 6 tasks  complete 2  error 3  warn 1" in text
    assert "min 1s  mean 4.167s  max 9s  (6 timed)" in text
    assert "e3  disk full" in text and "timeout" in text
    assert "2 messages were not tasks" in text


async def test_reads_a_bus_until_the_topic_is_finished() -> None:
    broker = MemoryBroker()
    for body in KNOWN[:3]:
        broker.publish("done", body)
    broker.close_topic("done")
    out = io.StringIO()
    app = RecapApp(consumer=MemoryConsumer(broker, "done"), as_json=True, out=out)
    await asyncio.wait_for(app.run(), 5)
    assert json.loads(out.getvalue())["types"]["fetch"]["results"] == {"complete": 2, "error": 1}
    assert broker.pending("done") == 0  # every message acknowledged


async def test_stop_prints_what_was_read_so_far() -> None:
    broker = MemoryBroker()
    broker.publish("done", KNOWN[0])
    out = io.StringIO()
    app = RecapApp(consumer=MemoryConsumer(broker, "done"), out=out)
    running = asyncio.create_task(app.run())
    while broker.pending("done"):
        await asyncio.sleep(0.01)
    await app.stop()
    assert await asyncio.wait_for(running, 5) == 0
    assert out.getvalue().startswith("fetch: 1 tasks  complete 1")


async def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.jsonl"):
        await RecapApp(files=[str(tmp_path / "missing.jsonl")], out=io.StringIO()).run()


def test_from_settings_reads_files_when_given_else_the_bus() -> None:
    with_files = RecapApp.from_settings(load_settings(RecapSettings, None, files=["a.jsonl"]))
    assert with_files.consumer is None and with_files.files == ["a.jsonl"]
    from_bus = RecapApp.from_settings(load_settings(RecapSettings, None, bus="memory:recap-test"))
    assert from_bus.consumer is not None


def test_command_line_json_flag(
    known_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("task.cli.configure_logging", lambda *a: None)  # keep pytest's handlers
    assert run_command(["recap", "--json", str(known_file)]) == 0
    assert json.loads(capsys.readouterr().out)["types"]["fetch"]["tasks"] == 6




async def test_status_endpoint_serves_the_recap_so_far() -> None:
    broker, port = MemoryBroker(), free_port()
    broker.publish("done", KNOWN[0])
    app = RecapApp(consumer=MemoryConsumer(broker, "done"), out=io.StringIO(), status_port=port)
    running = asyncio.create_task(app.run())
    while broker.pending("done"):
        await asyncio.sleep(0.01)
    stats = await get_stats(port)
    await app.stop()
    await asyncio.wait_for(running, 5)
    assert stats["app"] == "recap" and stats["tasks"] == 1


async def test_reads_a_file_bus_to_its_end(tmp_path: Path) -> None:
    (tmp_path / "done.jsonl").write_bytes(b"\n".join(KNOWN) + b"\n")
    settings = load_settings(RecapSettings, None, bus=f"file:{tmp_path}", json_output=True)
    app = RecapApp.from_settings(settings)
    app.out = out = io.StringIO()
    assert await asyncio.wait_for(app.run(), 5) == 0
    assert json.loads(out.getvalue())["types"]["fetch"]["results"]["error"] == 3


async def test_reading_a_bus_says_what_it_reads_and_files_say_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "done.jsonl").write_bytes(b"\n".join(KNOWN) + b"\n")
    with caplog.at_level(logging.INFO, "task.apps.recap"):
        for flags in ({"bus": f"file:{tmp_path}/"}, {"files": [str(tmp_path / "done.jsonl")]}):
            app = RecapApp.from_settings(load_settings(RecapSettings, None, **flags))
            app.out = io.StringIO()
            assert await asyncio.wait_for(app.run(), 5) == 0
    starts = [m for m in caplog.messages if "starting" in m]
    assert starts == [f"recap starting: bus=file:{tmp_path}/ topic=done channel=recap"]
