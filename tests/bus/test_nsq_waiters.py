"""The NSQ consumer under the Launcher's real concurrency: ``max_in_progress`` runners wait in
``msg()`` at once. With one waiter slot only the last caller was woken, so NSQ ran one task
at a time, and a stop left the other runners waiting for ever."""

from __future__ import annotations

import asyncio

from tests.bus.test_nsq_consumer import (  # noqa: F401 - fixtures are used by name
    PATIENCE,
    Peer,
    _stop_what_tests_made,
    consumer_for,
    peer,
    stopped,
    subscribed,
)

RUNNERS = 4


async def test_every_waiting_caller_gets_one_of_the_messages(peer: Peer) -> None:  # noqa: F811
    # Given four callers waiting in msg() on a consumer with prefetch 4
    consumer = consumer_for(peer, prefetch=RUNNERS)
    (conn,) = await subscribed(consumer, peer)
    waiting = [asyncio.create_task(consumer.msg()) for _ in range(RUNNERS)]
    await conn.expect(b"RDY 4\n")
    # When nsqd delivers four messages
    for n in range(RUNNERS):
        conn.message(n, b"body %d" % n)
    # Then each caller returns one of them, none twice
    got = await asyncio.wait_for(asyncio.gather(*waiting), PATIENCE)
    assert sorted(m.body for m in got if m is not None) == [b"body %d" % n for n in range(RUNNERS)]
    for message in got:
        assert message is not None
        await message.ack()
    for n in range(RUNNERS):
        await conn.expect(b"FIN %016d\n" % n)
    await stopped(consumer, conn)


async def test_stop_wakes_every_waiting_caller(peer: Peer) -> None:  # noqa: F811
    consumer = consumer_for(peer, prefetch=RUNNERS)
    (conn,) = await subscribed(consumer, peer)
    waiting = [asyncio.create_task(consumer.msg()) for _ in range(RUNNERS)]
    await conn.expect(b"RDY 4\n")
    await stopped(consumer, conn)
    assert await asyncio.wait_for(asyncio.gather(*waiting), PATIENCE) == [None] * RUNNERS
