"""Bad input through a live launcher on every bus here: ``taskbus worker nop --dead-letter-topic``.

Random bytes, truncated JSON, huge fields, 100,000 ``[``, invalid UTF-8, NUL bytes and the
strict cases (``null``, a non-object, no ``type``, ``TYPE``, a byte order mark) go in among
valid tasks. The worker must never crash or stick: every valid task is done, every invalid
message is counted and dead-lettered byte for byte (``body``, or ``body_b64`` when it is not
UTF-8; ``truncated`` where it was cut), and SIGTERM still ends it with status 0.
``TASK_FUZZ_SEED`` replays a corpus; ``TASK_FUZZ_RANDOM`` sets how many random blobs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from task.bus.deadletter import DEAD_LETTER_MAX_BYTES
from task.bus.registry import open_producer
from task.errors import InvalidTaskError
from task.task import Task
from tests.faults.helpers import (
    DoneTasks,
    Figures,
    TaskbusProcess,
    count_from_env,
    http_json,
    suffix,
    until,
)
from tests.servers.nats import NatsServer
from tests.servers.ports import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: under every bus's 1 MiB message limit, over the dead-letter envelope's cut
HUGE = 950_000


@dataclass
class Corpus:
    """Bodies in sending order; which are tasks (by id) and which must be dead-lettered."""

    bodies: list[bytes] = field(default_factory=list)
    valid_ids: list[str] = field(default_factory=list)
    invalid: list[bytes] = field(default_factory=list)

    def task(self, task: Task, body: bytes | None = None) -> None:
        self.bodies.append(body if body is not None else task.to_json())
        self.valid_ids.append(task.id)

    def bad(self, body: bytes) -> None:
        self.bodies.append(body)
        self.invalid.append(body)


def build_corpus(task_type: str, rng: random.Random, *, line_safe: bool) -> Corpus:
    """Valid tasks and invalid messages, shuffled. ``line_safe`` (file bus) keeps each body one
    non-blank line, since the file bus splits on newlines and skips blank lines."""
    corpus = Corpus()

    def bad(body: bytes) -> None:
        if line_safe:
            body = body.replace(b"\n", b"\\n")
            if body.endswith(b"\r"):
                body += b"#"
            if not body.strip():
                body = b"#" + body
        corpus.bad(body)

    entries: list[tuple[str, bytes | Task]] = []
    for i in range(40):
        entries.append(("task", Task.new(task_type, f"sleep=1ms&n={i}", id=f"v{i}")))
    sample = Task.new(task_type, "x" * 200, id="sample", meta="a=1&b=2").to_json()
    for i in range(count_from_env("TASK_FUZZ_RANDOM", 40)):
        entries.append(("bad", rng.randbytes(rng.randint(1, 3000))))
    for _ in range(20):
        entries.append(("bad", sample[: rng.randint(1, len(sample) - 1)]))  # truncated JSON
    entries += [
        ("bad", b"[" * 100_000),
        ("bad", b"[" * 100_000 + b"]" * 100_000),
        ("bad", b'{"a":' * 50_000),
        ("bad", b'{"type":"' + task_type.encode() + b'","info":"' + b"a" * HUGE),  # cut short
        ("bad", b'{"type":"","info":"' + b"b" * HUGE + b'"}'),  # huge, empty type
        ("bad", b"\xff\xfe\xfd not utf-8 \xc3\x28"),
        ("bad", b"\x00" * 64),
        ("bad", b'{"type":"a\x00b","info":""}'),  # raw NUL inside a string: not JSON
        ("bad", b"null"), ("bad", b"[]"), ("bad", b'"a task"'), ("bad", b"42"), ("bad", b"{}"),
        ("bad", b'{"TYPE":"' + task_type.encode() + b'"}'),
        ("bad", b'{"type":1,"info":""}'),
        ("bad", b"\xef\xbb\xbf" + Task.new(task_type, "", id="bom").to_json()),
        ("bad", b'{"type":"x","created":"yesterday"}'),
        ("bad", b'{"type":"x","info":NaN}'),
    ]
    huge_task = Task.new(task_type, "sleep=0&" + "h" * 500_000, id="huge-task")
    entries.append(("task", huge_task))
    # Go reads invalid UTF-8 in a string as U+FFFD, and so do we: a valid task
    entries.append(("raw-task", b'{"type":"' + task_type.encode() + b'","info":"\xff\xfe","id":"utf8-task"}'))
    rng.shuffle(entries)
    for kind, item in entries:
        if kind == "bad":
            assert isinstance(item, bytes)
            bad(item)
        elif kind == "raw-task":
            assert isinstance(item, bytes)
            corpus.task(Task.from_json(item), item)
        else:
            assert isinstance(item, Task)
            corpus.task(item)
    # the last message is a task, so a done task for it shows the launcher got past everything
    corpus.task(Task.new(task_type, "", id="last"))
    for body in corpus.invalid:  # the corpus is what it claims to be
        with pytest.raises(InvalidTaskError):
            Task.from_json(body)
    return corpus


def _envelope_original(envelope: dict[str, object]) -> tuple[bytes, bool]:
    if "body_b64" in envelope:
        original = base64.b64decode(str(envelope["body_b64"]))
    else:
        original = str(envelope["body"]).encode("utf-8")
    return original, bool(envelope.get("truncated", False))


@pytest.fixture(params=[
    "file",
    pytest.param("nats", marks=pytest.mark.nats),
    pytest.param("jetstream", marks=pytest.mark.jetstream),
    pytest.param("kafka", marks=pytest.mark.kafka),
])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(name, worker URL, reader URL) of one bus."""
    name = str(request.param)
    if name == "file":
        directory = tmp_path  # the bus directory must exist for a reader
        return name, f"file:{directory}/?follow=1&poll=20ms", f"file:{directory}/?follow=1&poll=20ms"
    if name == "nats":
        server: NatsServer = request.getfixturevalue("nats_server")
        return name, server.url, server.url
    if name == "jetstream":
        server = request.getfixturevalue("jetstream_server")
        url = f"jetstream://{server.hostport}"
        return name, url, url
    url = str(request.getfixturevalue("kafka_url"))
    return name, url, url


@pytest.mark.timeout(180)
async def test_bad_input_is_dead_lettered_and_tasks_are_done(
    request: pytest.FixtureRequest, tmp_path: Path, bus: tuple[str, str, str]
) -> None:
    name, url, reader_url = bus
    seed = count_from_env("TASK_FUZZ_SEED", random.randrange(1 << 30))
    print(f"TASK_FUZZ_SEED={seed}")
    task_type = f"fuzz-{suffix()}"
    done_topic, dead_topic = f"{task_type}-done", f"{task_type}-dead"
    corpus = build_corpus(task_type, random.Random(seed), line_safe=name == "file")
    port = free_port()
    worker = TaskbusProcess(
        ["worker", "nop", "--bus", url, "--type", task_type, "--done-topic", done_topic,
         "--dead-letter-topic", dead_topic, "--max-in-progress", "10", "--status-port", str(port)],
        tmp_path / "worker.log")
    try:
        async with DoneTasks(reader_url, done_topic) as done, DoneTasks(reader_url, dead_topic) as dead:
            dead.keep_bodies = True
            async with open_producer(url.partition("?")[0] if name == "file" else url) as producer:
                # Given a worker that listens (core NATS drops what comes before): probe it
                probes = 0

                async def answered() -> bool:
                    nonlocal probes
                    probes += 1
                    await producer.send(task_type, Task.new(task_type, "", id=f"probe{probes}").to_json())
                    await asyncio.sleep(0.2)
                    return any(i.startswith("probe") for i in done.counts)

                await until(answered, "the worker to answer a probe", timeout=60, every=0)
                # When the corpus goes through it
                for body in corpus.bodies:
                    await producer.send(task_type, body)
            # Then every valid task is done and every invalid message is dead-lettered
            await until(lambda: done.covers(corpus.valid_ids), "every valid task done", timeout=90)
            await until(lambda: len(dead.bodies) >= len(corpus.invalid), "every dead letter", timeout=60)
            await done.settle(quiet=0.5)
            stats = await http_json(port)
            worker.terminate()
            assert await worker.wait(30) == 0, worker.output()
        assert worker.running is False
        # byte for byte: the envelope carries what was sent (cut where it was too big)
        expected = Counter((body[:DEAD_LETTER_MAX_BYTES], len(body) > DEAD_LETTER_MAX_BYTES)
                           for body in corpus.invalid)
        envelopes = [json.loads(body) for body in dead.bodies]
        received = Counter(_envelope_original(envelope) for envelope in envelopes)
        assert received == expected
        assert {envelope["topic"] for envelope in envelopes} == {task_type}
        assert all(envelope["reason"] for envelope in envelopes)
        assert any(truncated for _, truncated in received)
        # counted: each invalid message once, nothing else called invalid
        assert (stats["tasks_invalid"], stats["dead_lettered"]) == (len(corpus.invalid),) * 2
        assert "Traceback" not in worker.output()
        Figures.of(request.node.name, name, corpus.valid_ids, done.counts,
                   invalid=len(corpus.invalid), dead_lettered=len(envelopes), seed=seed).record()
        assert max(done.counts[i] for i in corpus.valid_ids) == 1
    finally:
        await worker.close()
