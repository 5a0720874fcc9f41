from __future__ import annotations

import asyncio

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
    # the topic is finished only once nothing can come back: a nack would redeliver "a"
    waiting = asyncio.ensure_future(consumer.msg())
    await asyncio.sleep(0)
    assert not waiting.done()
    await message.ack()
    assert await asyncio.wait_for(waiting, 5) is None
    assert await consumer.msg() is None


async def test_a_nack_on_a_closed_topic_reaches_a_caller_already_waiting() -> None:
    broker = MemoryBroker()
    broker.publish("t", b"a")
    broker.close_topic("t")
    consumer = MemoryConsumer(broker, "t", prefetch=2)
    message = await consumer.msg()
    assert message is not None
    waiting = asyncio.ensure_future(consumer.msg())
    await asyncio.sleep(0)
    await message.nack(0)
    again = await asyncio.wait_for(waiting, 5)
    assert again is not None and again.body == b"a" and again.attempt == 2
