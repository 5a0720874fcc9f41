"""``taskbus topics`` through the command line on every bus that runs here (NSQ's /stats is
read from a stand-in in tests/inspect/test_nsq.py, and from a real nsqd under TASK_TEST_NSQD)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.apps.topics import TopicsApp
from task.bus.file import FileConsumer, FileOptions, FileProducer
from task.bus.jetstream import JetStreamConsumer, JetStreamOptions, JetStreamProducer
from task.bus.kafka import KafkaOptions, KafkaProducer
from task.bus.memory import MemoryBroker, MemoryConsumer
from task.cli import main
from task.inspect.memory import MemoryInspector
from task.ledger.base import ScheduleKind
from task.ledger.memory import MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.task import Task
from tests.servers.nats import NatsServer


def body(i: int) -> bytes:
    return Task.new("nop", f"task {i}", id=f"t{i}").to_json()


def topics(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["topics", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def rows(out: str) -> list[tuple[str, str, int | None, int | None]]:
    return [(r["topic"], r["channel"], r["waiting"], r["in_flight"]) for r in json.loads(out)]


# ---------------------------------------------------------------- file


@pytest.fixture
def file_bus(tmp_path: Path) -> str:
    """5 ``nop`` tasks of which the worker (channel nop) did 2, and 1 ``other`` task."""

    async def fill() -> None:
        async with FileProducer(FileOptions(f"{tmp_path}/")) as producer:
            for i in range(5):
                await producer.send("nop", body(i))
            await producer.send("other", body(9))
        async with FileConsumer(FileOptions(f"{tmp_path}/"), "nop", "nop") as consumer:
            for _ in range(2):
                message = await consumer.msg()
                assert message is not None
                await message.ack()

    asyncio.run(fill())
    return f"file:{tmp_path}/"


def test_file_table_counts_what_each_reader_has_left(file_bus: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = topics(capsys, "--bus", file_bus)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TOPIC", "CHANNEL", "WAITING", "IN", "FLIGHT", "REDELIVERED", "DELAYED",
                                "RETRYING", "OLDEST"]
    assert lines[1].split()[:3] == ["nop", "nop", "3"]
    assert lines[2].split()[:3] == ["other", "-", "1"]
    assert "note (other): no reader yet: every line waits" in out


def test_file_json_and_prefix(file_bus: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = topics(capsys, "--bus", file_bus, "--json", "ot")
    assert status == 0
    assert rows(out) == [("other", "", 1, None)]


def test_the_ledger_adds_delayed_and_retrying_tasks(file_bus: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Given a ledger holding 2 delayed nop tasks, 1 nop retry, and a delayed task for a topic
    # nothing was sent to yet
    path = str(tmp_path / "ledger.db")

    async def schedule() -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        async with SqliteLedger(path) as ledger:
            for i, kind in enumerate((ScheduleKind.DELAY, ScheduleKind.DELAY, ScheduleKind.RETRY)):
                await ledger.schedule(Task.new("nop", "", id=f"s{i}"), None, later, topic="nop", kind=kind)
            await ledger.schedule(Task.new("report", "", id="r"), None, later, topic="report",
                                  kind=ScheduleKind.DELAY)

    asyncio.run(schedule())
    status, out, _ = topics(capsys, "--bus", file_bus, "--ledger", f"sqlite:{path}", "--json")
    assert status == 0
    got = {(r["topic"], r["channel"]): (r["waiting"], r["delayed"], r["retrying"]) for r in json.loads(out)}
    assert got == {("nop", "nop"): (3, 2, 1), ("other", ""): (1, 0, 0), ("report", ""): (None, 1, 0)}


def test_a_missing_directory_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = topics(capsys, "--bus", f"file:{tmp_path}/nope/")
    assert status == 2 and "does not exist" in err and "Traceback" not in err


# ---------------------------------------------------------------- memory


def test_memory_is_refused_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = topics(capsys, "--bus", "memory:")
    assert status == 2 and "lives inside the process" in err


async def test_memory_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    broker = MemoryBroker()
    for i in range(3):
        broker.publish("nop", body(i))
    assert await MemoryConsumer(broker, "nop").msg() is not None
    ledger = MemoryLedger()
    await ledger.schedule(Task.new("nop", "", id="x"), None, datetime.now(UTC) + timedelta(minutes=5),
                          topic="nop", kind=ScheduleKind.RETRY)
    assert await TopicsApp(inspector=MemoryInspector(broker), ledger=ledger, as_json=True).run() == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["waiting"], row["in_flight"], row["retrying"]) == (2, 1, 1)


# ---------------------------------------------------------------- NATS


@pytest.mark.nats
def test_core_nats_says_it_keeps_nothing(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = topics(capsys, "--bus", f"nats://{nats_server.hostport}")
    assert status == 2 and "core NATS keeps no messages" in err


@pytest.mark.jetstream
def test_jetstream_rows_per_consumer(jetstream_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    topic = "tp" + uuid.uuid4().hex[:8]
    url = f"jetstream://{jetstream_server.hostport}"

    async def fill() -> None:
        options = JetStreamOptions.from_url(url)
        async with JetStreamProducer(options) as producer:
            for i in range(4):
                await producer.send(topic, body(i))
        async with JetStreamConsumer(options, topic, "workers") as consumer:
            message = await asyncio.wait_for(consumer.msg(), 10)
            assert message is not None
            await message.ack()

    asyncio.run(fill())
    status, out, _ = topics(capsys, "--bus", url, "--json", topic)
    assert status == 0
    assert rows(out) == [(topic, "workers", 3, 0)]


@pytest.mark.kafka
def test_kafka_topic_nobody_reads(kafka_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = "tp" + uuid.uuid4().hex[:8]
    url = kafka_url + "&partitions=2"

    async def fill() -> None:
        async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
            for i in range(4):
                await producer.send(topic, body(i))

    asyncio.run(fill())
    status, out, _ = topics(capsys, "--bus", url, "--json", topic)
    assert status == 0
    assert rows(out) == [(topic, "", 4, None)]
