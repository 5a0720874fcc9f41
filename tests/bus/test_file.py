from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from task.bus.base import Consumer, Producer
from task.bus.file import FileConsumer, FileOptions, FileProducer
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
    assert int((tmp_path / "t.jsonl.offset").read_text()) == (tmp_path / "t.jsonl").stat().st_size


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
