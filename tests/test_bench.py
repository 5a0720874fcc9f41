"""``taskbus bench``: its raw client loops keep the bus's guarantee, and it prints its figures.

The raw loops are the yardstick our Launcher is held to, so they must be correct loops: every
task handled exactly once, its done message confirmed before the task is acked or committed.
Each runs here against the real server of the fixtures with a small ``n`` and a named topic,
so the test can watch the done topic and read what is left unacked or uncommitted.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from nats.aio.msg import Msg

from task.bench.raw import jetstream as raw_jetstream
from task.bench.raw import kafka as raw_kafka
from task.bench.raw import nats as raw_nats
from task.bench.timing import Timing
from task.bus.jetstream_options import stream_name
from task.bus.kafka_options import KafkaOptions
from task.credentials import Credentials
from tests.servers.nats import NatsServer
from tests.servers.tansu import Tansu

#: tasks per raw run: more than one fetch batch (JetStream: 100), less than one getmany (Kafka: 500)
N = 250
#: a guard against a hang, not a speed requirement
PATIENCE = 30.0


def expected_ids(n: int) -> set[str]:
    return {f"raw-{i}" for i in range(n)}


def check_done_messages(bodies: list[bytes], n: int) -> None:
    """Exactly one done message per task, each a finished copy of its task."""
    done = [orjson.loads(body) for body in bodies]
    assert len(done) == n
    assert {d["id"] for d in done} == expected_ids(n)
    assert all(d["type"] == "nop" and d["result"] == "complete" for d in done)
    assert all(d["started"] <= d["ended"] for d in done)


def check_timing(timing: Timing) -> None:
    assert timing.seconds > 0 and timing.cpu_seconds > 0


# ---------------------------------------------------------------- core NATS


@pytest.mark.nats
async def test_raw_nats_loop_sends_one_done_message_per_task(nats_server: NatsServer) -> None:
    # Given a watcher on the done subject of a named topic
    topic = "raw_" + uuid.uuid4().hex[:8]
    watcher = await nats.connect(nats_server.url)
    received: list[bytes] = []
    all_in = asyncio.Event()

    async def on_done(msg: Msg) -> None:
        received.append(msg.data)
        if len(received) >= N:
            all_in.set()

    try:
        await watcher.subscribe(topic + "_done", cb=on_done)
        await watcher.flush()
        # When the raw loop handles N tasks
        timing = await raw_nats.raw_loop(nats_server.url, n=N, max_in_progress=10,
                                         credentials=Credentials(), topic=topic)
        await asyncio.wait_for(all_in.wait(), PATIENCE)
        await watcher.flush()  # anything more the server had for us has arrived by now
        # Then each task has exactly one done message
        check_done_messages(received, N)
        check_timing(timing)
    finally:
        await watcher.close()


# ---------------------------------------------------------------- JetStream


@pytest.mark.jetstream
async def test_raw_jetstream_loop_acks_each_task_once_after_its_done_message_is_stored(
    jetstream_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = "raw_" + uuid.uuid4().hex[:8]
    done_stream, task_stream = stream_name(topic + "_done"), stream_name(topic)
    observer = await nats.connect(jetstream_server.url)
    js = observer.jetstream()
    acked = 0
    ack = Msg.ack

    async def ack_after_checking(msg: Msg) -> None:
        # the done stream already holds more done messages than tasks acked so far
        nonlocal acked
        assert (await js.stream_info(done_stream)).state.messages > acked
        acked += 1
        await ack(msg)

    monkeypatch.setattr(Msg, "ack", ack_after_checking)
    try:
        # When the raw loop handles N tasks (three fetches of up to 100)
        timing = await raw_jetstream.raw_loop(jetstream_server.url, n=N, max_in_progress=10,
                                              credentials=Credentials(), topic=topic)
        monkeypatch.undo()
        # Then every task was delivered once and acked, nothing pending or unacked
        consumer = await js.consumer_info(task_stream, raw_jetstream.DURABLE)
        assert acked == N
        assert consumer.delivered.consumer_seq == N
        assert consumer.num_ack_pending == 0 and consumer.num_pending == 0
        assert consumer.ack_floor.stream_seq == N
        # and the done stream holds exactly one done message per task
        assert (await js.stream_info(done_stream)).state.messages == N
        bodies = [(await js.get_msg(done_stream, seq)).data or b"" for seq in range(1, N + 1)]
        check_done_messages(bodies, N)
        check_timing(timing)
    finally:
        for stream in (task_stream, done_stream):
            await js.delete_stream(stream)
        await observer.close()


# ---------------------------------------------------------------- Kafka


async def read_all(kafka_url: str, topic: str, partitions: int, n: int) -> list[bytes]:
    """Every record of ``topic``: until ``n`` are in and one more poll brings nothing."""
    args = KafkaOptions.from_url(kafka_url).client_args()
    reader = AIOKafkaConsumer(enable_auto_commit=False, **args)
    await reader.start()
    try:
        reader.assign([TopicPartition(topic, p) for p in range(partitions)])
        await reader.seek_to_beginning()
        values: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + PATIENCE
        while asyncio.get_running_loop().time() < deadline:
            batch = await reader.getmany(timeout_ms=1000)
            if not batch and len(values) >= n:
                break
            values += [record.value for records in batch.values() for record in records]
        return values
    finally:
        await reader.stop()


async def committed_total(kafka_url: str, group: str, topic: str, partitions: int) -> int:
    """The sum of the group's committed offsets over the topic's partitions."""
    args = KafkaOptions.from_url(kafka_url).client_args()
    reader = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **args)
    await reader.start()
    try:
        offsets = [await reader.committed(TopicPartition(topic, p)) for p in range(partitions)]
        return sum(offset or 0 for offset in offsets)
    finally:
        await reader.stop()


@pytest.mark.kafka
async def test_raw_kafka_loop_commits_every_task_after_its_done_message_is_delivered(
    tansu: Tansu, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = "raw_" + uuid.uuid4().hex[:8]
    partitions = KafkaOptions.from_url(tansu.url).partitions
    done_sends: list[asyncio.Future[Any]] = []
    commits = 0
    send, commit = AIOKafkaProducer.send, AIOKafkaConsumer.commit

    async def recording_send(self: AIOKafkaProducer, topic: str, value: bytes, **kwargs: Any) -> Any:
        future = await send(self, topic, value, **kwargs)
        if topic.endswith("_done"):
            done_sends.append(future)
        return future

    async def commit_after_checking(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> None:
        # every done message sent so far is delivered before the commit that covers its task
        nonlocal commits
        assert done_sends and all(f.done() and f.exception() is None for f in done_sends)
        commits += 1
        await commit(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaProducer, "send", recording_send)
    monkeypatch.setattr(AIOKafkaConsumer, "commit", commit_after_checking)
    # When the raw loop handles N tasks
    timing = await raw_kafka.raw_loop(tansu.url, n=N, max_in_progress=10,
                                      credentials=Credentials(), topic=topic)
    monkeypatch.undo()
    # Then it committed, every task's offset included, and each task has one done message
    assert commits >= 1 and len(done_sends) == N
    assert await committed_total(tansu.url, topic, topic, partitions) == N
    check_done_messages(await read_all(tansu.url, topic + "_done", partitions, N), N)
    check_timing(timing)


# ---------------------------------------------------------------- the command


FIGURES = ("tasks", "seconds", "tasks_per_s", "cpu_us_per_task",
           "raw_tasks_per_s", "raw_cpu_us_per_task", "ratio")


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    return subprocess.run([sys.executable, "-m", "task.cli", "bench", *args], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def test_bench_json_on_the_memory_bus_has_our_figures_and_no_raw_ones(tmp_path: Path) -> None:
    out = bench("--bus", "memory:", "-n", "300", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tasks"] == 300
    for key in ("seconds", "tasks_per_s", "cpu_us_per_task"):
        assert isinstance(result[key], float) and result[key] > 0
    assert result["raw_tasks_per_s"] is None and result["raw_cpu_us_per_task"] is None
    assert result["ratio"] is None


def test_bench_text_on_the_memory_bus_shows_cpu_per_task(tmp_path: Path) -> None:
    out = bench("--bus", "memory:", "-n", "300", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "tasks/s" in out.stdout and "CPU" in out.stdout and "µs/task" in out.stdout


@pytest.mark.nats
def test_bench_json_on_core_nats_has_both_runs_figures(tmp_path: Path, nats_server: NatsServer) -> None:
    out = bench("--bus", nats_server.url, "-n", "500", "--max-in-progress", "20", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tasks"] == 500 and result["bus"] == "nats"
    for key in FIGURES[1:]:
        assert isinstance(result[key], float) and result[key] > 0, key
    text = bench("--bus", nats_server.url, "-n", "200", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "raw client" in text.stdout and text.stdout.count("CPU") == 2
