"""The JetStream bus against a real nats-server -js: the contract, redelivery, dead letters,
de-duplication of retries only, restarts and crashes."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from task.bus.base import Consumer, Producer
from task.bus.jetstream import JetStreamConsumer, JetStreamOptions, JetStreamProducer, stream_name
from task.errors import BusError, ConfigError
from tests.bus.contract import BusContract
from tests.servers.nats import NatsServer, NatsServerFactory

pytestmark = pytest.mark.jetstream


def js_url(server: NatsServer, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"jetstream://{server.hostport}" + (f"?{query}" if query else "")


class TestJetStreamBus(BusContract):
    @pytest.fixture(autouse=True)
    def _server(self, jetstream_server: NatsServer) -> None:
        self.url = js_url(jetstream_server)

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return JetStreamConsumer(JetStreamOptions.from_url(self.url), topic, "workers", prefetch)

    def producer(self) -> Producer:
        return JetStreamProducer(JetStreamOptions.from_url(self.url))
