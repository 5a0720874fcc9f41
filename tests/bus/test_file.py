from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from task.bus.base import Consumer, Producer
from task.bus.file import FileConsumer, FileOptions, FileProducer, offset_file
from task.bus.file_options import parse_offset
from task.bus.registry import open_consumer, open_producer
from task.errors import BusError, ConfigError
from tests.bus.contract import BusContract


class TestFileBus(BusContract):
    """The file bus in follow mode behaves like a broker: messages arrive as they are written."""

    @pytest.fixture(autouse=True)
    def _dir(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return FileConsumer(FileOptions(f"{self.dir}/", follow=True, poll=0.02), topic, prefetch=prefetch)

    def producer(self) -> Producer:
        return FileProducer(FileOptions(f"{self.dir}/"))


async def _drain(consumer: Consumer) -> list[bytes]:
    bodies = []
    while (message := await asyncio.wait_for(consumer.msg(), 5)) is not None:
        bodies.append(message.body)
        await message.ack()
    return bodies


async def test_directory_url_reads_and_writes_topic_files(tmp_path: Path) -> None:
    producer = open_producer(f"file:{tmp_path}/data/")
    await producer.send("hello", b'{"type":"hello","info":"1"}')
    await producer.stop()
    assert (tmp_path / "data" / "hello.jsonl").read_bytes() == b'{"type":"hello","info":"1"}\n'
    consumer = open_consumer(f"file:{tmp_path}/data/", topic="hello")
    assert await _drain(consumer) == [b'{"type":"hello","info":"1"}']
    await consumer.stop()


async def test_a_file_path_is_read_and_the_producer_writes_beside_it(tmp_path: Path) -> None:
    tasks = tmp_path / "in.jsonl"
    tasks.write_bytes(b'{"type":"a","info":""}\n\n  \n{"type":"b","info":""}')  # blank lines, no final newline
    consumer = open_consumer(f"file:{tasks}", topic="ignored")
    assert await _drain(consumer) == [b'{"type":"a","info":""}', b'{"type":"b","info":""}']
    producer = open_producer(f"file:{tasks}")
    await producer.send("done", b"{}")
    await producer.stop()
    assert (tmp_path / "done.jsonl").read_bytes() == b"{}\n"


async def test_a_ten_megabyte_line_is_one_message(tmp_path: Path) -> None:
    big = b'{"type":"t","info":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    (tmp_path / "t.jsonl").write_bytes(b'{"type":"t","info":"a"}\n' + big + b'\n{"type":"t","info":"b"}\n')
    bodies = await _drain(open_consumer(f"file:{tmp_path}/", topic="t"))
    assert [len(b) for b in bodies] == [23, len(big), 23]


async def test_offset_resumes_after_the_last_acknowledged_line(tmp_path: Path) -> None:
    lines = [f'{{"type":"t","info":"{i}"}}'.encode() for i in range(5)]
    (tmp_path / "t.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    url = f"file:{tmp_path}/?offset=1"
    first = open_consumer(url, topic="t")
    got = [await first.msg() for _ in range(3)]
    assert all(m is not None for m in got)
    await got[0].ack()  # type: ignore[union-attr]
    await got[2].ack()  # type: ignore[union-attr]  (out of order: line 1 still open)
    await first.stop()  # a crash: line 1 was never acknowledged
    second = open_consumer(url, topic="t")
    assert await _drain(second) == lines[1:]
    await second.stop()
    third = open_consumer(url, topic="t")
    assert await _drain(third) == []
    offset, inode = (tmp_path / "t.jsonl.t.offset").read_text().split()
    assert (int(offset), int(inode)) == ((tmp_path / "t.jsonl").stat().st_size, (tmp_path / "t.jsonl").stat().st_ino)


async def test_follow_survives_truncation(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"type":"t","info":"old-1"}\n{"type":"t","info":"old-2"}\n')
    consumer = FileConsumer(FileOptions(str(path), follow=True, poll=0.02), "t")
    for _ in range(2):
        message = await asyncio.wait_for(consumer.msg(), 5)
        assert message is not None
        await message.ack()
    path.write_bytes(b'{"type":"t","info":"new"}\n')  # truncated and rewritten
    message = await asyncio.wait_for(consumer.msg(), 5)
    assert message is not None and message.body == b'{"type":"t","info":"new"}'
    await consumer.stop()


async def test_follow_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"type":"t","info":"before"}\n')
    consumer = FileConsumer(FileOptions(str(path), follow=True, poll=0.02), "t")
    message = await asyncio.wait_for(consumer.msg(), 5)
    assert message is not None
    os.rename(path, tmp_path / "t.jsonl.1")
    path.write_bytes(b'{"type":"t","info":"after"}\n')
    message = await asyncio.wait_for(consumer.msg(), 5)
    assert message is not None and message.body == b'{"type":"t","info":"after"}'
    await consumer.stop()


async def test_a_body_with_a_newline_is_refused(tmp_path: Path) -> None:
    producer = open_producer(f"file:{tmp_path}/")
    with pytest.raises(BusError, match="newline"):
        await producer.send("t", b'{"a":\n1}')
    await producer.stop()


def test_bad_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown option 'folow'"):
        open_consumer("file:./x/?folow=1", topic="t")
    with pytest.raises(ConfigError, match="not a boolean"):
        open_consumer("file:./x/?follow=maybe", topic="t")


def _lines(n: int, start: int = 0) -> list[bytes]:
    return [f'{{"type":"t","info":"{i}"}}'.encode() for i in range(start, start + n)]


def _append(path: Path, lines: list[bytes]) -> None:
    with path.open("ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))


async def _run(url: str, channel: str, topic: str = "done") -> list[bytes]:
    """One run of a reader: read to the end, acknowledging each line, then stop."""
    consumer = open_consumer(url, topic=topic, channel=channel)
    try:
        return await _drain(consumer)
    finally:
        await consumer.stop()


async def test_a_second_run_of_a_reader_sees_only_new_lines(tmp_path: Path) -> None:
    # Given a worker that read every task of its file once
    tasks = tmp_path / "done.jsonl"
    _append(tasks, _lines(3))
    url = f"file:{tmp_path}/"
    assert await _run(url, "retry") == _lines(3)
    # When it runs again after two more lines arrived (no option given: resuming is the default)
    _append(tasks, _lines(2, start=3))
    # Then it reads only those, and a third run reads nothing
    assert await _run(url, "retry") == _lines(2, start=3)
    assert await _run(url, "retry") == []


async def test_readers_on_different_channels_each_see_every_line(tmp_path: Path) -> None:
    # Given retry, recap and logger reading one done file, interleaved
    _append(tmp_path / "done.jsonl", _lines(4))
    url = f"file:{tmp_path}/"
    readers = {name: open_consumer(url, topic="done", channel=name) for name in ("retry", "recap", "logger")}
    seen: dict[str, list[bytes]] = {name: [] for name in readers}
    for _ in range(2):
        for name, consumer in readers.items():
            message = await asyncio.wait_for(consumer.msg(), 5)
            assert message is not None
            seen[name].append(message.body)
            await message.ack()
    for name, consumer in readers.items():
        seen[name] += await _drain(consumer)
        await consumer.stop()
    # Then none took another's lines: each has all four, and its own offset file
    assert seen == {name: _lines(4) for name in readers}
    size = (tmp_path / "done.jsonl").stat().st_size
    for name in readers:
        assert parse_offset((tmp_path / f"done.jsonl.{name}.offset").read_text()).offset == size
    assert not (tmp_path / "done.jsonl.offset").exists()


async def test_offset_0_rereads_everything_and_keeps_no_offset(tmp_path: Path) -> None:
    _append(tmp_path / "done.jsonl", _lines(3))
    url = f"file:{tmp_path}/?offset=0"
    assert await _run(url, "recap") == _lines(3)
    assert await _run(url, "recap") == _lines(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.jsonl"]
    # and a resuming reader on the same channel is not moved by those runs
    assert await _run(f"file:{tmp_path}/", "recap") == _lines(3)


async def test_offset_file_name_is_per_channel_and_safe(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    assert offset_file(path, "fetch-file_2") == tmp_path / "in.jsonl.fetch-file_2.offset"
    assert offset_file(path, "../a b/c") == tmp_path / "in.jsonl.___a_b_c.offset"
    consumer = open_consumer(f"file:{path}", topic="t", channel="")  # channel defaults to the topic
    assert consumer.offset_path == tmp_path / "in.jsonl.t.offset"  # type: ignore[attr-defined]
    assert open_consumer("file:-", topic="t", channel="c").offset_path is None  # type: ignore[attr-defined]


async def test_an_old_shared_offset_file_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an offset file written by ``?offset=1`` before each reader had its own
    _append(tmp_path / "done.jsonl", _lines(2))
    (tmp_path / "done.jsonl.offset").write_text("0")
    with caplog.at_level(logging.WARNING, logger="task.bus.file"):
        assert await _run(f"file:{tmp_path}/", "retry") == _lines(2)
        assert await _run(f"file:{tmp_path}/", "retry") == []
    # Then one warning names the old file and the reader's new one
    [warning] = [r.getMessage() for r in caplog.records if "old shared offset" in r.getMessage()]
    assert str(tmp_path / "done.jsonl.offset") in warning and str(tmp_path / "done.jsonl.retry.offset") in warning


async def test_follow_and_rotation_save_the_offset_of_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    _append(path, _lines(1))
    consumer = open_consumer(f"file:{path}?follow=1&poll=20ms", topic="t", channel="w")
    message = await asyncio.wait_for(consumer.msg(), 5)
    assert message is not None
    await message.ack()
    os.rename(path, tmp_path / "t.jsonl.1")
    _append(path, _lines(2, start=1))
    for expected in _lines(2, start=1):
        message = await asyncio.wait_for(consumer.msg(), 5)
        assert message is not None and message.body == expected
        await message.ack()
    await consumer.stop()
    assert parse_offset((tmp_path / "t.jsonl.w.offset").read_text()).offset == path.stat().st_size
    assert await _run(f"file:{path}", "w", topic="t") == []  # a re-run resumes in the new file


@pytest.mark.parametrize("url", ["file:{d}/nosuchdir/", "file:{d}/nosuchdir/t.jsonl", "file:{d}/nosuchdir/?follow=1"])
async def test_a_missing_directory_is_a_config_error_naming_it(tmp_path: Path, url: str) -> None:
    consumer = open_consumer(url.format(d=tmp_path), topic="t", channel="t")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nosuchdir'} does not exist.*create it.*--bus"):
        await consumer.start()
    assert not (tmp_path / "nosuchdir").exists()


def test_a_worker_on_a_missing_directory_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from task.cli import main

    status = main(["worker", "nop", "--bus", f"file:{tmp_path}/nosuchdir/"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the start-up banner
    assert status == 2 and "Traceback" not in err
    assert last.startswith("taskbus: file bus directory") and "nosuchdir does not exist" in last


async def test_an_existing_directory_without_the_topic_file_is_empty_or_waited_for(tmp_path: Path) -> None:
    assert await _run(f"file:{tmp_path}/", "t", topic="t") == []
    follower = open_consumer(f"file:{tmp_path}/?follow=1&poll=20ms", topic="t", channel="t")
    waiting = asyncio.ensure_future(follower.msg())
    await asyncio.sleep(0)
    assert not waiting.done()
    _append(tmp_path / "t.jsonl", _lines(1))
    message = await asyncio.wait_for(waiting, 5)
    assert message is not None and message.body == _lines(1)[0]
    await follower.stop()
