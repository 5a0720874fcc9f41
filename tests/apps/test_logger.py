"""The logger app: hourly files, bodies byte for byte, ack only after the write."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from task.apps.logger import LoggerApp, LoggerSettings
from task.apps.recap import RecapApp
from task.bus.memory import MemoryBroker, MemoryConsumer
from task.errors import ConfigError
from task.settings import load_settings
from tests.apps.status import get_stats
from tests.servers.ports import free_port


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_app(broker: MemoryBroker, tmp_path: Path, clock: Clock, **kwargs: object) -> LoggerApp:
    return LoggerApp(consumer=MemoryConsumer(broker, "done", "logger"), directory=tmp_path,
                     clock=clock, **kwargs)  # type: ignore[arg-type]


async def archive(app: LoggerApp, broker: MemoryBroker, body: bytes) -> None:
    broker.publish("done", body)
    message = await app.consumer.msg()
    assert message is not None
    await app.handle(message)


async def test_messages_go_to_the_file_of_their_hour_byte_for_byte(tmp_path: Path) -> None:
    # Given a logger whose clock is just before 06:00 UTC
    broker = MemoryBroker()
    clock = Clock(datetime(2024, 1, 31, 5, 59, 59, tzinfo=UTC))
    odd = '{"type":"fetch","info":"caf\u00e9 \\u00e9","id":"1"}'.encode()
    async with make_app(broker, tmp_path, clock) as app:
        # When messages arrive before and after the hour changes (one not even a task)
        await archive(app, broker, odd)
        await archive(app, broker, b"not json at all")
        clock.now += timedelta(seconds=1)
        await archive(app, broker, b'{"type":"load","info":""}\n')
    # Then each hour has its own file, lines exactly as received, all acknowledged
    five = tmp_path / "done/2024/01/31/05.jsonl"
    six = tmp_path / "done/2024/01/31/06.jsonl"
    assert five.read_bytes() == odd + b"\nnot json at all\n"
    assert six.read_bytes() == b'{"type":"load","info":""}\n'
    assert broker.pending("done") == 0
    assert app.counts["files"] == 2 and app.counts["archived"] == 3


async def test_a_time_in_another_zone_is_filed_by_its_utc_hour(tmp_path: Path) -> None:
    broker = MemoryBroker()
    paris = datetime(2024, 1, 31, 7, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    async with make_app(broker, tmp_path, Clock(paris)) as app:
        await archive(app, broker, b"{}")
    assert (tmp_path / "done/2024/01/31/07.jsonl").read_bytes() == b"{}\n"


async def test_a_restart_appends_to_the_hour_file(tmp_path: Path) -> None:
    broker = MemoryBroker()
    clock = Clock(datetime(2024, 1, 31, 5, tzinfo=UTC))
    for body in (b'{"n":1}', b'{"n":2}'):
        async with make_app(broker, tmp_path, clock) as app:
            await archive(app, broker, body)
    assert (tmp_path / "done/2024/01/31/05.jsonl").read_bytes() == b'{"n":1}\n{"n":2}\n'


async def test_multi_line_bodies_become_one_line_and_empty_ones_are_skipped(tmp_path: Path) -> None:
    broker = MemoryBroker()
    clock = Clock(datetime(2024, 1, 31, 5, tzinfo=UTC))
    async with make_app(broker, tmp_path, clock) as app:
        await archive(app, broker, b'{\n  "type": "x",\n  "info": "y"\n}')
        await archive(app, broker, b"two\nlines")
        await archive(app, broker, b"\n")
    lines = (tmp_path / "done/2024/01/31/05.jsonl").read_text().splitlines()
    assert lines == ['{"type":"x","info":"y"}', '"two\\nlines"']
    assert json.loads(lines[1]) == "two\nlines"
    assert (app.counts["rewritten"], app.counts["empty"]) == (2, 1)
    assert broker.pending("done") == 0


async def test_a_failed_write_is_not_acknowledged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("task.apps.logger.WRITE_RETRY_DELAY", 0.01)
    # Given the hour's directory cannot be created (a file is in the way)
    broker = MemoryBroker()
    clock = Clock(datetime(2024, 1, 31, 5, tzinfo=UTC))
    (tmp_path / "done").write_text("in the way")
    async with make_app(broker, tmp_path, clock) as app:
        # When a message arrives, it is not acknowledged but comes back
        await archive(app, broker, b'{"n":1}')
        assert app.counts["write_errors"] == 1 and broker.pending("done") == 1
        # Once the way is clear, the redelivery is archived
        (tmp_path / "done").unlink()
        again = await asyncio.wait_for(app.consumer.msg(), 5)
        assert again is not None and again.attempt == 2
        await app.handle(again)
    assert (tmp_path / "done/2024/01/31/05.jsonl").read_bytes() == b'{"n":1}\n'
    assert broker.pending("done") == 0


async def test_run_archives_until_the_topic_is_finished(tmp_path: Path) -> None:
    broker = MemoryBroker()
    for n in range(3):
        broker.publish("done", b'{"n":%d}' % n)
    broker.close_topic("done")
    clock = Clock(datetime(2024, 1, 31, 5, tzinfo=UTC))
    app = make_app(broker, tmp_path, clock, template="{topic}-{yyyy}{mm}{dd}.log", fsync=True)
    assert await asyncio.wait_for(app.run(), 5) == 0
    assert (tmp_path / "done-20240131.log").read_bytes().count(b"\n") == 3


def test_settings_and_a_bad_template(tmp_path: Path) -> None:
    settings = load_settings(LoggerSettings, None, bus="memory:logger-test", dir=str(tmp_path), topic="jobs")
    app = LoggerApp.from_settings(settings)
    assert app.template == "jobs/{yyyy}/{mm}/{dd}/{hh}.jsonl"
    with pytest.raises(ConfigError, match=r"\{yyy\}"):
        LoggerApp(consumer=MemoryConsumer(MemoryBroker(), "done"), directory=tmp_path, template="{yyy}.jsonl")




async def test_status_endpoint_serves_stats(tmp_path: Path) -> None:
    broker, port = MemoryBroker(), free_port()
    clock = Clock(datetime(2024, 1, 31, 5, tzinfo=UTC))
    async with make_app(broker, tmp_path, clock, status_port=port) as app:
        await archive(app, broker, b"{}")
        stats = await get_stats(port)
    assert stats["app"] == "logger" and stats["archived"] == 1
    assert str(stats["file"]).endswith("05.jsonl")


async def test_archives_a_file_bus_and_recap_reads_the_archive(tmp_path: Path) -> None:
    # Given a file bus whose done topic holds three lines
    bus, archive_dir = tmp_path / "bus", tmp_path / "archive"
    bus.mkdir()
    lines = [b'{"type":"a","info":"%d","result":"complete"}' % n for n in range(3)]
    (bus / "done.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # When the logger runs from settings, it archives them and stops at the end of the file
    settings = load_settings(LoggerSettings, None, bus=f"file:{bus}", dir=str(archive_dir))
    assert await asyncio.wait_for(LoggerApp.from_settings(settings).run(), 5) == 0
    [hour_file] = list(archive_dir.glob("done/*/*/*/*.jsonl"))
    assert hour_file.read_bytes() == b"\n".join(lines) + b"\n"
    # And recap reads the archive back
    out = io.StringIO()
    await RecapApp(files=[str(hour_file)], out=out).run()
    assert out.getvalue().startswith("a: 3 tasks  complete 3")


async def test_a_second_run_over_the_same_file_bus_adds_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a file bus whose done topic holds two lines, archived once
    bus, archive_dir = tmp_path / "bus", tmp_path / "archive"
    bus.mkdir()
    (bus / "done.jsonl").write_bytes(b'{"type":"a","info":"1"}\n{"type":"a","info":"2"}\n')
    settings = load_settings(LoggerSettings, None, bus=f"file:{bus}/", dir=str(archive_dir))
    with caplog.at_level(logging.INFO, "task.apps.logger"):
        assert await asyncio.wait_for(LoggerApp.from_settings(settings).run(), 5) == 0
    # The start-up line says what is archived where
    assert f"logger starting: bus=file:{bus}/ topic=done channel=logger dir={archive_dir}" in caplog.text
    # When the logger runs again over the same file with nothing new in it
    assert await asyncio.wait_for(LoggerApp.from_settings(settings).run(), 5) == 0
    # Then the archive still holds each line once
    [hour_file] = list(archive_dir.glob("done/*/*/*/*.jsonl"))
    assert hour_file.read_bytes().count(b"\n") == 2
