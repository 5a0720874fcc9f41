"""Odd but legal worker shapes run to a done task on the file bus and on JetStream.

Go users write ``NewWorker(info)`` and set only their own fields, so a subclass that never
calls ``super().__init__`` is the most natural worker there is. Each shape here once crashed
or could crash the Launcher; each must end every task ``complete`` with its meta merged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from task import Task, Worker, completed
from task.bus.jetstream import JetStreamConsumer, JetStreamOptions, JetStreamProducer
from task.launcher import Launcher
from task.result import Outcome
from task.settings import WorkerSettings, load_settings
from task.worker import TaskContext
from tests.servers.nats import NatsServer

# ------------------------------------------------------------------ the shapes


class NoSuper(Worker):
    task_type = "shape"

    def __init__(self, info: str) -> None:  # no super().__init__(): the Go way
        self.path = info

    async def do_task(self, ctx: TaskContext) -> Outcome:
        self.meta["shape"] = ["no-super"]
        return completed("did %s", self.path)


class NoSuperSync(NoSuper):
    def do_task(self, ctx: TaskContext) -> Outcome:  # type: ignore[override]
        self.meta["shape"] = ["no-super-sync"]
        return completed("did %s", self.path)


class Slotted(Worker):
    task_type = "shape"
    __slots__ = ("path",)

    def __init__(self, info: str) -> None:
        self.path = info

    async def do_task(self, ctx: TaskContext) -> Outcome:
        self.meta["shape"] = ["slots"]
        return completed("did %s", self.path)


class SlottedSync(Slotted):
    __slots__ = ()

    def do_task(self, ctx: TaskContext) -> Outcome:  # type: ignore[override]
        self.meta["shape"] = ["slots-sync"]
        return completed("did %s", self.path)


@dataclass
class Dataclass(Worker):
    info: str
    attempts: int = 0

    async def do_task(self, ctx: TaskContext) -> Outcome:
        self.meta["shape"] = ["dataclass"]
        return completed("did %s", self.info)


@dataclass
class DataclassSync(Worker):
    info: str

    def do_task(self, ctx: TaskContext) -> Outcome:  # type: ignore[override]
        self.meta["shape"] = ["dataclass-sync"]
        return completed("did %s", self.info)


class SetsMeta(Worker):
    """Assigns ``self.meta`` as a whole, without ``super().__init__``."""

    def __init__(self, info: str) -> None:
        self.path = info
        self.meta = {"shape": ["sets-meta"]}

    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("did %s", self.path)


class Plain:
    """Not a Worker at all: any object with ``do_task`` will do, and its ``meta`` dict counts."""

    def __init__(self, info: str, label: str) -> None:
        self.info = info
        self.meta = {"shape": label}

    async def do_task(self, ctx: TaskContext) -> Outcome:
        return completed("did %s", self.info)


class PlainSync(Plain):
    def do_task(self, ctx: TaskContext) -> Outcome:  # type: ignore[override]
        return completed("did %s", self.info)


def factory(info: str) -> Plain:
    return Plain(info, "factory")


def factory_sync(info: str) -> Plain:
    return PlainSync(info, "factory-sync")


SHAPES: dict[str, Callable[[str], Any]] = {
    "no-super": NoSuper,
    "no-super-sync": NoSuperSync,
    "slots": Slotted,
    "slots-sync": SlottedSync,
    "dataclass": Dataclass,
    "dataclass-sync": DataclassSync,
    "sets-meta": SetsMeta,
    "factory": factory,
    "factory-sync": factory_sync,
}

TASKS = 6


def sent_tasks() -> list[Task]:
    return [Task.new("shape", f"file-{i}", id=f"id-{i}", meta="from=taskmaster") for i in range(TASKS)]


def assert_all_done(shape: str, done: list[Task]) -> None:
    assert sorted(t.id for t in done) == [f"id-{i}" for i in range(TASKS)]
    for task in done:
        assert (task.result, task.msg) == ("complete", f"did {task.info}"), task
        assert task.meta == f"from=taskmaster&shape={shape}"


# ------------------------------------------------------------------ file bus


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_shape_finishes_its_tasks_on_the_file_bus(shape: str, tmp_path: Path) -> None:
    (tmp_path / "shape.jsonl").write_bytes(b"".join(t.to_json() + b"\n" for t in sent_tasks()))
    settings = load_settings(
        WorkerSettings, worker="shapes", type="shape", bus=f"file:{tmp_path}/", max_in_progress=3
    )
    await asyncio.wait_for(Launcher.from_settings(SHAPES[shape], settings).run(), 30)
    done = [Task.from_json(line) for line in (tmp_path / "done.jsonl").read_bytes().splitlines()]
    assert_all_done(shape, done)


# ------------------------------------------------------------------ JetStream


async def done_on(url: str, topic: str, count: int) -> list[Task]:
    """The first ``count`` done tasks on ``topic``, read by a fresh durable consumer."""
    consumer = JetStreamConsumer(JetStreamOptions.from_url(url), topic, "check" + uuid.uuid4().hex[:6], prefetch=20)
    done: list[Task] = []
    async with consumer:
        while len(done) < count:
            message = await asyncio.wait_for(consumer.msg(), 20)
            assert message is not None
            done.append(Task.from_json(message.body))
            await message.ack()
    return done


@pytest.mark.jetstream
@pytest.mark.parametrize("shape", SHAPES)
async def test_every_shape_finishes_its_tasks_on_jetstream(shape: str, jetstream_server: NatsServer) -> None:
    url = f"jetstream://{jetstream_server.hostport}"
    topic = "shape" + uuid.uuid4().hex[:8]
    async with JetStreamProducer(JetStreamOptions.from_url(url)) as producer:
        for task in sent_tasks():
            await producer.send(topic, task.to_json())
    settings = load_settings(
        WorkerSettings, worker="shapes", type="shape", topic=topic, bus=url,
        done_topic=topic + "-done", max_in_progress=3, lifetime=TASKS,
    )
    await asyncio.wait_for(Launcher.from_settings(SHAPES[shape], settings).run(), 30)
    assert_all_done(shape, await done_on(url, topic + "-done", TASKS))
