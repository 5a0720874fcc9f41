"""The core NATS bus against a real nats-server: the contract, queue groups, auth, TLS."""

from __future__ import annotations

import asyncio

import pytest

from task.bus.base import Consumer, Producer
from task.bus.nats import NatsConsumer, NatsOptions, NatsProducer, open_consumer, open_producer
from task.bus.registry import Credentials
from task.errors import BusError, ConfigError
from tests.bus.contract import BusContract
from tests.servers.nats import NatsServer, NatsServerFactory

pytestmark = pytest.mark.nats


class TestNatsBus(BusContract):
    redelivers_on_nack = False
    counts_attempts = False
    big_body = 512 * 1024  # under nats-server's default max_payload of 1 MiB

    @pytest.fixture(autouse=True)
    def _server(self, nats_server: NatsServer) -> None:
        self.url = nats_server.url

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return NatsConsumer(NatsOptions.from_url(self.url), topic, "workers", prefetch)

    def producer(self) -> Producer:
        return NatsProducer(NatsOptions.from_url(self.url))

    async def _subscribed(self) -> None:
        """Core NATS only delivers to subscriptions that exist: let SUB reach the server."""
