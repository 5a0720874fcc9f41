"""The behaviour every bus owes the Launcher, written once and run against each bus.

Subclass ``BusContract`` in ``tests/bus/test_<bus>.py`` and implement ``consumer`` and
``producer`` (build them; the tests start and stop them). Class flags say what the bus
cannot do by design (core NATS does not redeliver).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import ClassVar

import pytest

from task.bus.base import Consumer, Message, Producer
from task.errors import BusClosedError


class BusContract:
    #: nack() hands the message out again
    redelivers_on_nack: ClassVar[bool] = True
    #: Message.attempt counts deliveries
    counts_attempts: ClassVar[bool] = True
    #: the largest body the suite sends
    big_body: ClassVar[int] = 512 * 1024
    #: seconds to wait for a message that should arrive
    patience: ClassVar[float] = 10.0

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        raise NotImplementedError

    def producer(self) -> Producer:
        raise NotImplementedError

    @pytest.fixture
    def topic(self) -> str:
        return "t" + uuid.uuid4().hex[:10]

    async def _next(self, consumer: Consumer) -> Message:
        message = await asyncio.wait_for(consumer.msg(), self.patience)
        assert message is not None, "the consumer finished while a message was expected"
        return message

    async def test_a_sent_body_arrives_intact(self, topic: str) -> None:
        body = '{"type":"t","info":"é 日本 😀 \\u2028"}'.encode()
        async with self.producer() as producer, self.consumer(topic) as consumer:
            await producer.send(topic, body)
            message = await self._next(consumer)
            assert message.body == body
            assert message.attempt == 1
            await message.ack()

    async def test_every_message_arrives_once(self, topic: str) -> None:
        bodies = {f'{{"type":"t","info":"{i}"}}'.encode() for i in range(50)}
        async with self.producer() as producer, self.consumer(topic, prefetch=10) as consumer:
            for body in sorted(bodies):
                await producer.send(topic, body, key=body.decode())
            seen = []
            for _ in bodies:
                message = await self._next(consumer)
                seen.append(message.body)
                await message.ack()
            assert sorted(seen) == sorted(bodies)

    async def test_nack_redelivers_with_a_higher_attempt(self, topic: str) -> None:
        if not self.redelivers_on_nack:
            pytest.skip("this bus does not redeliver by design (documented at-most-once)")
        async with self.producer() as producer, self.consumer(topic) as consumer:
            await producer.send(topic, b'{"type":"t","info":"again"}')
            first = await self._next(consumer)
            await first.nack(0)
            second = await self._next(consumer)
            assert second.body == first.body
            if self.counts_attempts:
                assert second.attempt == first.attempt + 1
            await second.ack()

    async def test_a_big_body_roundtrips(self, topic: str) -> None:
        body = b'{"type":"t","info":"' + b"x" * self.big_body + b'"}'
        async with self.producer() as producer, self.consumer(topic) as consumer:
            await producer.send(topic, body)
            message = await self._next(consumer)
            assert message.body == body
            await message.ack()

    async def test_stop_wakes_a_waiting_msg_and_is_idempotent(self, topic: str) -> None:
        consumer = self.consumer(topic)
        await consumer.start()
        waiting = asyncio.create_task(consumer.msg())
        await asyncio.sleep(0.2)
        await consumer.stop()
        assert await asyncio.wait_for(waiting, self.patience) is None
        await consumer.stop()
        assert await asyncio.wait_for(consumer.msg(), self.patience) is None

    async def test_send_after_stop_is_refused(self, topic: str) -> None:
        producer = self.producer()
        await producer.start()
        await producer.stop()
        await producer.stop()
        with pytest.raises(BusClosedError):
            await producer.send(topic, b'{"type":"t","info":""}')

    async def test_info_names_the_bus(self, topic: str) -> None:
        async with self.producer() as producer, self.consumer(topic) as consumer:
            assert isinstance(consumer.info().get("bus"), str)
            assert isinstance(producer.info().get("bus"), str)

    async def test_several_callers_waiting_at_once_each_get_one_message(self, topic: str) -> None:
        # Given as many callers waiting in msg() as the Launcher has runners
        callers = 4
        bodies = sorted(f'{{"type":"t","info":"{i}"}}'.encode() for i in range(callers))
        async with self.producer() as producer, self.consumer(topic, prefetch=callers) as consumer:
            waiting = [asyncio.create_task(consumer.msg()) for _ in range(callers)]
            await asyncio.sleep(0.2)  # let them all wait (a head start, not a timing assertion)
            # When as many messages arrive
            for body in bodies:
                await producer.send(topic, body, key=body.decode())
            # Then every caller returns with one of them
            got = await asyncio.wait_for(asyncio.gather(*waiting), self.patience)
            assert sorted(m.body for m in got if m is not None) == bodies
            for message in got:
                assert message is not None
                await message.ack()

    async def test_stop_wakes_every_waiting_caller(self, topic: str) -> None:
        consumer = self.consumer(topic, prefetch=4)
        await consumer.start()
        waiting = [asyncio.create_task(consumer.msg()) for _ in range(4)]
        await asyncio.sleep(0.2)
        await consumer.stop()
        assert await asyncio.wait_for(asyncio.gather(*waiting), self.patience) == [None] * 4
