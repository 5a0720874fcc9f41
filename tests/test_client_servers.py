"""``task.Client`` against real servers: core NATS, JetStream, Kafka (Tansu), and NSQ where
``TASK_TEST_NSQD`` points at an nsqd (none can be installed here)."""

from __future__ import annotations

import os

import pytest

from task import rfc3339
from task.bus.base import Consumer
from task.bus.registry import open_consumer
from tests.client_contract import ClientContract
from tests.servers.nats import NatsServer

NSQD = os.environ.get("TASK_TEST_NSQD", "")


@pytest.mark.nats
class TestClientOnNats(ClientContract):
    @pytest.fixture(autouse=True)
    def _url(self, nats_server: NatsServer) -> None:
        self.url = self.worker_url = nats_server.url


@pytest.mark.jetstream
class TestClientOnJetStream(ClientContract):
    @pytest.fixture(autouse=True)
    def _url(self, jetstream_server: NatsServer) -> None:
        self.url = self.worker_url = f"jetstream://{jetstream_server.hostport}"


    async def test_a_delayed_task_is_held_by_jetstream_and_runs_no_earlier(self) -> None:
        # Given a worker and a client without a ledger: JetStream holds the task itself
        async with self.worker(), self.client() as client:
            sent = await client.send(self.type, "later", delay=1)
            done = await client.wait(sent.id, timeout=self.patience)
        run_at = rfc3339.parse(sent.get_meta("run_at"))
        assert run_at is not None
        started = rfc3339.parse(done.started)
        assert started is not None and started >= run_at  # never early
        assert done.result == "complete"


@pytest.mark.kafka
class TestClientOnKafka(ClientContract):
    @pytest.fixture(autouse=True)
    def _url(self, kafka_url: str) -> None:
        self.url = self.worker_url = kafka_url + "&partitions=2&commit_interval=100ms"

    def worker_consumer(self) -> Consumer:
        # A new consumer group takes Tansu about 5 s to form, once per test; the client is
        # what is tested here, so the worker reads the partitions directly (no group).
        from task.bus.kafka import KafkaConsumer

        consumer = open_consumer(self.worker_url, topic=self.type, channel=self.type)
        assert isinstance(consumer, KafkaConsumer)
        consumer.from_end = True
        return consumer


@pytest.mark.nsq
@pytest.mark.skipif(not NSQD, reason="set TASK_TEST_NSQD=host:port to run against a real nsqd")
class TestClientOnNsq(ClientContract):
    @pytest.fixture(autouse=True)
    def _url(self) -> None:
        self.url = self.worker_url = f"nsq://{NSQD}"
