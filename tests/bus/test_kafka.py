"""The Kafka bus against a real Kafka-protocol broker (Tansu, started by the fixture)."""

from __future__ import annotations

import asyncio

import pytest

from task.bus.base import Consumer, Producer
from task.bus.kafka import KafkaConsumer, KafkaOptions, KafkaProducer
from task.bus.registry import Credentials
from task.errors import BusError, ConfigError
from tests.bus.contract import BusContract
from tests.servers.tansu import Tansu

pytestmark = pytest.mark.kafka


class TestKafkaBus(BusContract):
    @pytest.fixture(autouse=True)
    def _url(self, kafka_url: str) -> None:
        self.url = kafka_url + "&partitions=2&commit_interval=100ms"

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return KafkaConsumer(KafkaOptions.from_url(self.url), topic, "g-" + topic, prefetch)

    def producer(self) -> Producer:
        return KafkaProducer(KafkaOptions.from_url(self.url))
