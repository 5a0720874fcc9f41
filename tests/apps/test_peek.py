"""``taskbus peek`` through the command line on every bus that runs here."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.apps.peek import PeekApp
from task.bus.file import FileConsumer, FileOptions, FileProducer
from task.bus.jetstream import JetStreamOptions, JetStreamProducer
from task.bus.kafka import KafkaOptions, KafkaProducer
from task.bus.memory import MemoryBroker
from task.cli import main
from task.inspect.memory import MemoryInspector
from task.task import Task
from tests.servers.nats import NatsServer


def body(i: int) -> bytes:
    task = Task.new("nop", f"task {i}", id=f"t{i}")
    task.created = "2026-01-01T00:00:00Z"
    return task.to_json()


def peek(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["peek", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def ids(out: str) -> list[str]:
    return [doc["id"] for doc in json.loads(out)]


@pytest.fixture
def file_bus(tmp_path: Path) -> str:
    """4 tasks and a line that is not a task; the worker (channel nop) did the first."""

    async def fill() -> None:
        async with FileProducer(FileOptions(f"{tmp_path}/")) as producer:
            for i in range(4):
                await producer.send("nop", body(i))
            await producer.send("nop", b"not json")
        async with FileConsumer(FileOptions(f"{tmp_path}/"), "nop", "nop") as consumer:
            message = await consumer.msg()
            assert message is not None
            await message.ack()

    asyncio.run(fill())
    return f"file:{tmp_path}/"


def test_file_table_from_the_worker_offset(file_bus: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = peek(capsys, "nop", "--bus", file_bus)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "ID", "TYPE", "AGE", "INFO"]
    assert [line.split()[1] for line in lines[1:]] == ["t1", "t2", "t3", "-"]
    assert "(not a task)" in lines[4] and "not json" in lines[4]


def test_file_json_count_and_channel(file_bus: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = peek(capsys, "nop", "--bus", file_bus, "-n", "2", "--json")
    assert status == 0 and ids(out) == ["t1", "t2"]
    # a channel that never read starts at the first line
    status, out, _ = peek(capsys, "nop", "--bus", file_bus, "-n", "1", "--json", "--channel", "recap")
    assert ids(out) == ["t0"]
    # and peeking moved nothing
    assert ids(peek(capsys, "nop", "--bus", file_bus, "-n", "1", "--json")[1]) == ["t1"]


def test_nothing_waiting_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = peek(capsys, "empty", "--bus", f"file:{tmp_path}/")
    assert (status, out) == (0, "nothing waits on 'empty'\n")
    status, _, err = peek(capsys, "--bus", f"file:{tmp_path}/")
    assert status == 2 and "needs a topic" in err
    status, _, err = peek(capsys, "nop", "--bus", f"file:{tmp_path}/", "-n", "0")
    assert status == 2 and "count" in err


def test_memory_is_refused_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = peek(capsys, "nop", "--bus", "memory:")
    assert status == 2 and "lives inside the process" in err


async def test_memory_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    broker = MemoryBroker()
    for i in range(3):
        broker.publish("nop", body(i))
    now = datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    assert await PeekApp(inspector=MemoryInspector(broker), topic="nop", count=2, now=now).run() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:4] for line in lines[1:]] == [["t0", "nop", "2m"], ["t1", "nop", "2m"]]


@pytest.mark.nats
def test_core_nats_cannot_peek(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = peek(capsys, "nop", "--bus", f"nats://{nats_server.hostport}")
    assert status == 2 and "core NATS keeps no messages" in err


@pytest.mark.jetstream
def test_jetstream(jetstream_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    topic = "pk" + uuid.uuid4().hex[:8]
    url = f"jetstream://{jetstream_server.hostport}"

    async def fill() -> None:
        async with JetStreamProducer(JetStreamOptions.from_url(url)) as producer:
            for i in range(3):
                await producer.send(topic, body(i))

    asyncio.run(fill())
    status, out, _ = peek(capsys, topic, "--bus", url, "--json")
    assert status == 0 and ids(out) == ["t0", "t1", "t2"]


@pytest.mark.kafka
def test_kafka(kafka_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = "pk" + uuid.uuid4().hex[:8]
    url = kafka_url + "&partitions=1"

    async def fill() -> None:
        async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
            for i in range(3):
                await producer.send(topic, body(i))

    asyncio.run(fill())
    status, out, _ = peek(capsys, topic, "--bus", url, "--json", "-n", "2")
    assert status == 0 and ids(out) == ["t0", "t1"]
