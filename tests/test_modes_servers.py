"""Priorities and broadcast tasks on real servers: core NATS, JetStream, Kafka (Tansu), and
NSQ where ``TASK_TEST_NSQD`` points at an nsqd (none can be installed here)."""

from __future__ import annotations

import asyncio
import os

import pytest

from task.bus.kafka_options import KafkaOptions
from task.bus.kafka_producer import murmur2
from task.task import Task
from tests.modes_contract import ModesContract
from tests.servers.nats import NatsServer

NSQD = os.environ.get("TASK_TEST_NSQD", "")
#: partitions of a topic the Kafka bus creates
PARTITIONS = KafkaOptions.from_url("kafka://localhost").partitions


@pytest.mark.nats
class TestModesOnNats(ModesContract):
    @pytest.fixture(autouse=True)
    def _url(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url


@pytest.mark.jetstream
class TestModesOnJetStream(ModesContract):
    @pytest.fixture(autouse=True)
    def _url(self, jetstream_server: NatsServer) -> None:
        self.url = f"jetstream://{jetstream_server.hostport}"


@pytest.mark.kafka
class TestModesOnKafka(ModesContract):
    ordered = False
    exactly_once = False

    async def test_the_caller_of_msg_holds_the_message_so_its_sends_count_towards_it(self) -> None:
        # Given a priority reader on two Kafka topics and a task on the lower one
        from task.bus.kafka import KafkaMessage
        from task.bus.priority import open_priority_consumer

        high, low = f"{self.type}-high", f"{self.type}-low"
        await self.send(low, Task.new(self.type, "x"))
        reader = open_priority_consumer(self.url, [high, low], channel=self.type, prefetch=1)
        try:
            # When the runner takes it (the reader fetched it in a helper task)
            async with asyncio.timeout(self.patience):  # in this task (wait_for makes another)
                message = await reader.msg()
            # Then the done task the runner sends is confirmed with the commit, as on one topic
            assert isinstance(message, KafkaMessage) and message.takes_delivery()
            await message.ack()
        finally:
            await reader.stop()

    @pytest.mark.slow
    async def test_a_stopping_worker_gives_back_what_it_held_unstarted(self) -> None:
        """Two group rebalances (B joins, A leaves) take Tansu about 8 s."""
        await super().test_a_stopping_worker_gives_back_what_it_held_unstarted()

    def backlog(self, prefix: str, count: int) -> list[Task]:
        """One task on each partition of the topic (4, the bus's default): the group splits
        them between two workers, and with random ids all could land on the other worker's
        partitions (1 time in 16), leaving the first one nothing to do."""
        tasks: list[Task] = []
        taken: set[int] = set()
        while len(tasks) < count:
            task = Task.new(self.type, f"{prefix}-{len(tasks)}")
            partition = (murmur2(task.id.encode()) & 0x7FFFFFFF) % PARTITIONS
            if partition not in taken or len(taken) == PARTITIONS:
                taken.add(partition)
                tasks.append(task)
        return tasks

    @pytest.fixture(autouse=True)
    def _url(self, kafka_url: str) -> None:
        self.url = kafka_url + "&commit_interval=100ms&session_timeout=3s"


@pytest.mark.nsq
@pytest.mark.skipif(not NSQD, reason="set TASK_TEST_NSQD=host:port to run against a real nsqd")
class TestModesOnNsq(ModesContract):
    @pytest.fixture(autouse=True)
    def _url(self) -> None:
        self.url = f"nsq://{NSQD}"
