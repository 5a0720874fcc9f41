"""``taskbus dlq ls|show|replay`` through the command line on every bus that runs here
(NSQ: tests/inspect/test_nsq.py), with dead letters in the Launcher's envelope."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from task.apps.dlq import DlqApp
from task.bus.deadletter import DEAD_LETTER_MAX_BYTES, dead_letter_envelope
from task.bus.file import FileOptions, FileProducer
from task.bus.jetstream import JetStreamOptions, JetStreamProducer
from task.bus.kafka import KafkaOptions, KafkaProducer
from task.bus.memory import Fault, MemoryBroker, MemoryConsumer, MemoryProducer
from task.cli import main
from task.inspect import open_inspector
from task.inspect.memory import MemoryInspector
from task.task import Task
from tests.servers.nats import NatsServer


def task_body(i: int) -> bytes:
    return Task.new("nop", f"task {i}", id=f"t{i}").to_json()


#: the two tasks that failed, made once: a body carries the second it was created in
T1, T2 = task_body(1), task_body(2)
#: what the Launcher dead-letters: two tasks that failed, a message that is not a task
LETTERS = [
    dead_letter_envelope(T1, "failed in taskbus 5 times: boom", "nop", 5),
    dead_letter_envelope(T2, "failed in taskbus 5 times: boom", "nop", 5),
    dead_letter_envelope(b"not json", "not JSON", "nop", 1),
]


def dlq(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["dlq", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    status, out, _ = dlq(capsys, "ls", *argv, "--json")
    assert status == 0
    return list(json.loads(out))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


# ---------------------------------------------------------------- file


@pytest.fixture
def file_bus(tmp_path: Path) -> str:
    async def fill() -> None:
        async with FileProducer(FileOptions(f"{tmp_path}/")) as producer:
            for letter in LETTERS:
                await producer.send("dead", letter)

    asyncio.run(fill())
    return f"file:{tmp_path}/"


def test_ls_and_show(file_bus: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = dlq(capsys, "ls", "--topic", "dead", "--bus", file_bus)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["#", "REASON", "TOPIC", "ATTEMPTS", "RECEIVED", "BODY"]
    assert len(lines) == 4 and "not json" in lines[3]
    assert [(d["n"], d["task_id"], d["attempts"]) for d in listed(capsys, "--topic", "dead", "--bus", file_bus)] == [
        (1, "t1", 5), (2, "t2", 5), (3, None, 1)]
    status, out, _ = dlq(capsys, "show", "2", "--topic", "dead", "--bus", file_bus)
    assert status == 0
    assert "reason:   failed in taskbus 5 times: boom" in out and '"id": "t2"' in out
    status, _, err = dlq(capsys, "show", "9", "--topic", "dead", "--bus", file_bus)
    assert status == 1 and "no dead letter 9: 3 on 'dead'" in err


def test_replay_one_sends_it_back_and_keeps_the_others(file_bus: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = dlq(capsys, "replay", "2", "--topic", "dead", "--bus", file_bus)
    assert (status, out) == (0, "replayed 1 of 1; 1 kept in the dead-letter topic\n")
    assert lines_of(tmp_path / "nop.jsonl") == [T2]
    left = listed(capsys, "--topic", "dead", "--bus", file_bus)
    assert sorted(str(d["body"]) for d in left) == sorted([T1.decode(), "not json"])


def test_replay_by_task_id_then_all(file_bus: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert dlq(capsys, "replay", "--id", "t1", "--topic", "dead", "--bus", file_bus)[:2] == (0, "replayed 1 of 1\n")
    assert dlq(capsys, "replay", "--all", "--topic", "dead", "--bus", file_bus)[:2] == (0, "replayed 2 of 2\n")
    assert lines_of(tmp_path / "nop.jsonl") == [T1, T2, b"not json"]
    assert listed(capsys, "--topic", "dead", "--bus", file_bus) == []
    assert dlq(capsys, "ls", "--topic", "dead", "--bus", file_bus)[1] == "no dead letters on 'dead'\n"
    assert dlq(capsys, "replay", "--all", "--topic", "dead", "--bus", file_bus)[:2] == (0, "nothing to replay on 'dead'\n")


def test_a_truncated_body_is_not_replayed_and_stays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = Task.new("nop", "x" * (DEAD_LETTER_MAX_BYTES + 10), id="big").to_json()
    (tmp_path / "dead.jsonl").write_bytes(
        dead_letter_envelope(huge, "too big", "nop", 1) + b"\n" + LETTERS[0] + b"\n")
    status, out, err = dlq(capsys, "replay", "--all", "--topic", "dead", "--bus", f"file:{tmp_path}/")
    assert (status, out) == (1, "replayed 1 of 2; 1 kept in the dead-letter topic\n")
    assert "not replayed: an envelope without a task id: the body was cut" in err
    [kept] = listed(capsys, "--topic", "dead", "--bus", f"file:{tmp_path}/")
    assert kept["truncated"] is True and kept["reason"] == "too big"


@pytest.mark.parametrize(("argv", "says"), [
    ([], "say what to do"),
    (["ls"], "needs --topic"),
    (["replay", "--topic", "dead"], "say which, one way"),
    (["replay", "1", "--all", "--topic", "dead"], "say which, one way"),
    (["ls", "--all", "--topic", "dead"], "takes no positions"),
    (["show", "x", "--topic", "dead"], "by their number"),
    (["drop", "--topic", "dead"], "unknown dlq action"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], says: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = dlq(capsys, *argv, "--bus", f"file:{tmp_path}/")
    assert status == 2 and says in err and "Traceback" not in err


# ---------------------------------------------------------------- memory


def memory_app(broker: MemoryBroker, *argv: str, **options: object) -> DlqApp:
    action, *args = argv
    return DlqApp(inspector=MemoryInspector(broker), topic="dead", action=action, args=args,
                  consumer=MemoryConsumer(broker, "dead", "taskbus-dlq"), producer=MemoryProducer(broker),
                  patience=5, **options)  # type: ignore[arg-type]


async def test_memory_replay_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    broker = MemoryBroker()
    for letter in LETTERS:
        broker.publish("dead", letter)
    assert await memory_app(broker, "replay", replay_all=True).run() == 0
    assert capsys.readouterr().out == "replayed 3 of 3\n"
    assert broker.bodies("nop") == [T1, T2, b"not json"]
    assert broker.pending("dead") == 0


async def test_a_failed_send_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a dead letter and a bus that refuses the next send
    broker = MemoryBroker()
    broker.publish("dead", LETTERS[0])
    broker.inject(Fault.SEND_FAILS)
    # When it is replayed, the replay stops with exit 1
    assert await memory_app(broker, "replay", replay_all=True).run() == 1
    assert "stopped: injected fault" in capsys.readouterr().err
    # Then the dead letter is still there, and a second replay sends it
    assert await MemoryInspector(broker).peek("dead", 5) == [LETTERS[0]]
    assert await memory_app(broker, "replay", replay_all=True).run() == 0
    assert broker.bodies("nop") == [T1]


def test_memory_is_refused_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = dlq(capsys, "ls", "--topic", "dead", "--bus", "memory:")
    assert status == 2 and "lives inside the process" in err


# ---------------------------------------------------------------- servers


async def peek(url: str, topic: str) -> list[bytes]:
    inspector = open_inspector(url)
    try:
        return await inspector.peek(topic, 10)
    finally:
        await inspector.close()


@pytest.mark.nats
def test_core_nats_keeps_no_dead_letters(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = dlq(capsys, "ls", "--topic", "dead", "--bus", f"nats://{nats_server.hostport}")
    assert status == 2 and "core NATS keeps no messages" in err


@pytest.mark.jetstream
def test_jetstream(jetstream_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"jetstream://{jetstream_server.hostport}"
    dead, topic = "dl" + uuid.uuid4().hex[:8], "nop" + uuid.uuid4().hex[:8]
    bodies = [task_body(i) for i in range(3)]
    letters = [dead_letter_envelope(b, "boom", topic, 5) for b in bodies]

    async def fill() -> None:
        async with JetStreamProducer(JetStreamOptions.from_url(url)) as producer:
            for letter in letters:
                await producer.send(dead, letter)

    asyncio.run(fill())
    assert [d["task_id"] for d in listed(capsys, "--topic", dead, "--bus", url)] == ["t0", "t1", "t2"]
    assert dlq(capsys, "replay", "1", "--topic", dead, "--bus", url)[:2] == (0, "replayed 1 of 1\n")
    assert [d["task_id"] for d in listed(capsys, "--topic", dead, "--bus", url)] == ["t1", "t2"]
    assert dlq(capsys, "replay", "--all", "--topic", dead, "--bus", url)[:2] == (0, "replayed 2 of 2\n")
    assert listed(capsys, "--topic", dead, "--bus", url) == []
    assert asyncio.run(peek(url, topic)) == bodies


def test_the_jetstream_reader_never_gives_up_on_a_dead_letter() -> None:
    from task.apps.dlq import DlqSettings
    from task.bus.jetstream import JetStreamConsumer

    settings = DlqSettings(action="replay", replay_all=True, dead_letter_topic="dead",
                           bus="jetstream://127.0.0.1:4222?ack_wait=1m")
    app = DlqApp.from_settings(settings)
    assert isinstance(app.consumer, JetStreamConsumer)
    assert app.consumer.options.max_deliver == -1
    assert app.consumer.options.ack_wait == 60


@pytest.mark.kafka
def test_kafka(kafka_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = kafka_url + "&partitions=1&commit_interval=50ms"
    dead, topic = "dl" + uuid.uuid4().hex[:8], "nop" + uuid.uuid4().hex[:8]
    bodies = [task_body(i) for i in range(2)]
    letters = [dead_letter_envelope(b, "boom", topic, 5) for b in bodies]

    async def fill() -> None:
        async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
            for letter in letters:
                await producer.send(dead, letter)

    asyncio.run(fill())
    assert [d["task_id"] for d in listed(capsys, "--topic", dead, "--bus", url)] == ["t0", "t1"]
    assert dlq(capsys, "replay", "--all", "--topic", dead, "--bus", url)[:2] == (0, "replayed 2 of 2\n")
    assert listed(capsys, "--topic", dead, "--bus", url) == []
    assert asyncio.run(open_inspector(url).peek(topic, 10)) == bodies
