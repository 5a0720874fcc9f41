"""The file inspector: lines after each reader's offset, as the file consumer would go on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.bus.file import FileConsumer, FileOptions, FileProducer
from task.errors import ConfigError
from task.inspect import open_inspector
from task.inspect.file import FileInspector
from task.task import Task


def body(i: int) -> bytes:
    task = Task.new("nop", f"task {i}", id=f"t{i}")
    task.created = f"2026-01-01T00:00:0{i}Z"
    return task.to_json()


async def fill(directory: Path, topic: str, count: int) -> None:
    async with FileProducer(FileOptions(str(directory) + "/")) as producer:
        for i in range(count):
            await producer.send(topic, body(i))


async def run(directory: Path, topic: str, channel: str, count: int) -> None:
    """A reader of ``channel`` acknowledges ``count`` lines (its offset moves past them)."""
    async with FileConsumer(FileOptions(str(directory) + "/"), topic, channel) as consumer:
        for _ in range(count):
            message = await consumer.msg()
            assert message is not None
            await message.ack()


async def test_each_reader_has_its_own_backlog(tmp_path: Path) -> None:
    # Given 5 tasks, a worker that did 2 of them and a recap reader that did all 5
    await fill(tmp_path, "nop", 5)
    await run(tmp_path, "nop", "nop", 2)
    await run(tmp_path, "nop", "recap", 5)
    inspector = open_inspector(f"file:{tmp_path}/")
    rows = await inspector.topics()
    # Then the listing shows 3 waiting for the worker, none for recap
    assert [(r.topic, r.channel, r.waiting) for r in rows] == [("nop", "nop", 3), ("nop", "recap", 0)]
    assert (await inspector.backlog("nop", "nop")).waiting == 3
    # and a channel that never ran would read all 5
    fresh = await inspector.backlog("nop", "new")
    assert fresh.waiting == 5 and "no offset file" in fresh.notes[0]


async def test_peek_shows_the_next_lines_and_moves_nothing(tmp_path: Path) -> None:
    await fill(tmp_path, "nop", 5)
    await run(tmp_path, "nop", "nop", 2)
    inspector = open_inspector(f"file:{tmp_path}/")
    for _ in range(2):
        assert [Task.from_json(b).id for b in await inspector.peek("nop", 2)] == ["t2", "t3"]
    assert [Task.from_json(b).id for b in await inspector.peek("nop", 10, "other")] == [f"t{i}" for i in range(5)]
    # the worker goes on where it was
    async with FileConsumer(FileOptions(f"{tmp_path}/"), "nop", "nop") as consumer:
        message = await consumer.msg()
        assert message is not None and Task.from_json(message.body).id == "t2"


async def test_oldest_age_comes_from_the_task_created_time(tmp_path: Path) -> None:
    await fill(tmp_path, "nop", 3)
    await run(tmp_path, "nop", "nop", 1)
    now = datetime(2026, 1, 1, 0, 1, 1, tzinfo=UTC)
    inspector = FileInspector(FileOptions(f"{tmp_path}/"), now=lambda: now)
    assert (await inspector.backlog("nop", "nop")).oldest_age_seconds == 60.0  # t1 created at :01


async def test_a_file_nobody_reads_yet_and_a_half_written_line(tmp_path: Path) -> None:
    await fill(tmp_path, "nop", 2)
    path = tmp_path / "nop.jsonl"
    path.write_bytes(path.read_bytes() + b'{"type":"nop"')  # a producer is still writing this line
    rows = await open_inspector(f"file:{tmp_path}/").topics()
    assert [(r.topic, r.channel, r.waiting) for r in rows] == [("nop", "", 2)]
    assert "no reader yet" in rows[0].notes[0]


async def test_a_single_file_url_and_a_missing_topic(tmp_path: Path) -> None:
    await fill(tmp_path, "jobs", 3)
    inspector = open_inspector(f"file:{tmp_path}/jobs.jsonl")
    assert [(r.topic, r.waiting) for r in await inspector.topics()] == [("jobs", 3)]
    missing = open_inspector(f"file:{tmp_path}/")
    assert (await missing.backlog("nothing", "c")).waiting == 0
    assert await missing.peek("nothing", 3) == []


def test_stdin_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="stdin"):
        open_inspector("file:-")


async def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await open_inspector(f"file:{tmp_path}/nope/").topics()
