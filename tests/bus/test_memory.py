from __future__ import annotations

import pytest

from task.bus.base import Consumer, Producer
from task.bus.memory import Fault, MemoryBroker, MemoryConsumer, MemoryProducer
from task.errors import BusError
from tests.bus.contract import BusContract


class TestMemoryBus(BusContract):
    @pytest.fixture(autouse=True)
    def _broker(self) -> None:
        self.broker = MemoryBroker()

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return MemoryConsumer(self.broker, topic, prefetch=prefetch)

    def producer(self) -> Producer:
        return MemoryProducer(self.broker)


async def test_injected_send_fault_raises_then_clears() -> None:
    broker = MemoryBroker()
    broker.inject(Fault.SEND_FAILS, times=1)
    producer = MemoryProducer(broker)
    with pytest.raises(BusError):
        await producer.send("t", b"x")
    await producer.send("t", b"x")
    assert broker.bodies("t") == [b"x"]


async def test_closed_topic_finishes_after_draining() -> None:
    broker = MemoryBroker()
    broker.publish("t", b"a")
    broker.close_topic("t")
    consumer = MemoryConsumer(broker, "t")
    message = await consumer.msg()
    assert message is not None and message.body == b"a"
    assert await consumer.msg() is None
