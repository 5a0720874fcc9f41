"""Kafka and the Launcher's shutdown, against the real Tansu broker.

The consumer must stay in its group until every message it handed out is settled: a task
cancelled at ``worker_kill_time`` ends "worker forced to close", its done task is sent and
acknowledged after the stop began, and that acknowledgement must still reach the group's
committed offset, or the task runs again after a restart.
"""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import pytest

from task.bus.kafka import KafkaConsumer, KafkaOptions, KafkaProducer
from task.launcher import FORCED_CLOSE_MSG, Launcher, LauncherOptions
from task.result import completed
from task.task import Task
from task.worker import TaskContext, Worker
from tests.bus.test_kafka import _committed

pytestmark = pytest.mark.kafka


class Endless(Worker):
    """Runs until cancelled: only the Launcher's forced close ends it."""

    task_type = "endless"

    async def do_task(self, ctx: TaskContext) -> tuple[str, str]:
        await asyncio.Event().wait()
        return completed("never")


async def _first(consumer: KafkaConsumer) -> bytes:
    async with consumer:
        message = await asyncio.wait_for(consumer.msg(), 20)
        assert message is not None
        await message.ack()
        return message.body


async def test_a_task_forced_to_close_at_stop_is_committed_and_not_run_again(kafka_url: str) -> None:
    # drain_timeout shorter than worker_kill_time: the consumer's own patience must not decide
    url = kafka_url + "&partitions=1&commit_interval=100ms&drain_timeout=100ms"
    topic, group = "stop" + uuid4().hex[:8], "g" + uuid4().hex[:8]
    task = Task.new("endless", "forever", id="t1")
    async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
        await producer.send(topic, task.to_json())
    consumer = KafkaConsumer(KafkaOptions.from_url(url), topic, group, prefetch=1)
    options = LauncherOptions(
        task_type="endless", topic=topic, channel=group, done_topic=topic + "-done",
        worker_kill_time=0.5,
    )
    launcher = Launcher(Endless, consumer, KafkaProducer(KafkaOptions.from_url(url)), options)
    running = asyncio.create_task(launcher.run())
    # Given the worker running the task
    async with asyncio.timeout(30):
        while launcher.stats()["tasks_running"] < 1:
            await asyncio.sleep(0.01)
    # When the launcher stops and the task outlives worker_kill_time
    await launcher.stop()
    await asyncio.wait_for(running, 30)
    # Then its done task says it was forced to close
    done = await _first(KafkaConsumer(KafkaOptions.from_url(url), topic + "-done", "c" + group))
    assert json.loads(done)["msg"] == FORCED_CLOSE_MSG
    # And its offset is committed
    assert await _committed(url, topic, group) == 1
    # And the group's next member does not get it again: the next task is the first it sees
    async with KafkaProducer(KafkaOptions.from_url(url)) as producer:
        await producer.send(topic, Task.new("endless", "next", id="t2").to_json())
    assert json.loads(await _first(KafkaConsumer(KafkaOptions.from_url(url), topic, group)))["id"] == "t2"
