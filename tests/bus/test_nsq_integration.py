"""The NSQ bus against a real nsqd (and nsqlookupd): the bus contract plus NSQ's scenarios.

No nsqd can be installed on these machines, so these run only when ``TASK_TEST_NSQD``
(and, for discovery, ``TASK_TEST_NSQLOOKUPD``) point at one; ``deploy/nsq/`` has a
docker-compose file that starts both. The restart scenario also needs
``TASK_TEST_NSQD_RESTART``, a shell command that restarts that nsqd.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from task import Result, Task, Worker, completed
from task.bus.base import Consumer, Message, Producer
from task.bus.nsq import NsqConsumer, NsqProducer, open_consumer, open_producer
from task.credentials import Credentials
from task.errors import BusError
from task.launcher import Launcher, LauncherOptions
from task.result import Outcome
from task.worker import TaskContext
from tests.bus.contract import BusContract

NSQD = os.environ.get("TASK_TEST_NSQD", "")
NSQLOOKUPD = os.environ.get("TASK_TEST_NSQLOOKUPD", "")
RESTART = os.environ.get("TASK_TEST_NSQD_RESTART", "")

pytestmark = [
    pytest.mark.nsq,
    pytest.mark.skipif(not NSQD, reason="set TASK_TEST_NSQD=host:port to run against a real nsqd"),
]

#: Short timeouts so redelivery after a kill is quick; nsqd's minimum msg_timeout is 1s.
FAST = "heartbeat_interval=2s&msg_timeout=2s&backoff=0"
PATIENCE = 15.0


def consumer(topic: str, channel: str = "c", prefetch: int = 1, query: str = FAST) -> NsqConsumer:
    return open_consumer(
        f"nsq://{NSQD}?{query}",
        topic=topic,
        channel=channel,
        prefetch=prefetch,
        credentials=Credentials(),
    )


def producer() -> NsqProducer:
    return open_producer(f"nsq://{NSQD}", credentials=Credentials())


async def next_message(part: Consumer) -> Message:
    message = await asyncio.wait_for(part.msg(), PATIENCE)
    assert message is not None
    return message


class TestNsqBus(BusContract):
    # nsqd's default --max-msg-size is 1 MiB
    big_body = 512 * 1024
    patience = PATIENCE

    def consumer(self, topic: str, prefetch: int = 1) -> Consumer:
        return consumer(topic, prefetch=prefetch)

    def producer(self) -> Producer:
        return producer()


@pytest.fixture
def topic() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def test_two_consumers_of_one_channel_share_the_messages(topic: str) -> None:
    bodies = {f'{{"type":"t","info":"{i}"}}'.encode() for i in range(40)}
    async with producer() as out, consumer(topic) as one, consumer(topic) as two:
        await out.send_many(topic, sorted(bodies))
        seen: dict[int, list[bytes]] = {1: [], 2: []}

        async def drain(index: int, part: NsqConsumer) -> None:
            while sum(map(len, seen.values())) < len(bodies):
                try:
                    message = await asyncio.wait_for(part.msg(), 2)
                except TimeoutError:
                    continue
                assert message is not None
                seen[index].append(message.body)
                await asyncio.sleep(0.01)  # work takes time, so both get a share
                await message.ack()

        await asyncio.wait_for(asyncio.gather(drain(1, one), drain(2, two)), 4 * PATIENCE)
        assert sorted(seen[1] + seen[2]) == sorted(bodies)  # each exactly once
        assert seen[1] and seen[2]


_KILLED_WORKER = """
import asyncio, sys
from task.bus.nsq import open_consumer
from task.credentials import Credentials

async def main():
    consumer = open_consumer(sys.argv[1], topic=sys.argv[2], channel="c", prefetch=1,
                             credentials=Credentials())
    message = await consumer.msg()
    print("got", message.attempt, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_consumers_message_is_redelivered(topic: str) -> None:
    body = b'{"type":"t","info":"survives"}'
    async with producer() as out:
        await out.send(topic, body)
    # Given a worker process holding the message mid-task
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_WORKER,
        f"nsq://{NSQD}?{FAST}",
        topic,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), PATIENCE)
        assert line.split() == [b"got", b"1"]
    finally:
        # When it is SIGKILLed: no CLS, no REQ
        worker.kill()
        await worker.wait()
    # Then nsqd redelivers the message after its msg_timeout, with attempt 2
    async with consumer(topic) as again:
        message = await next_message(again)
        assert (message.body, message.attempt) == (body, 2)
        await message.ack()


async def test_stop_requeues_prefetched_messages_at_once(topic: str) -> None:
    async with producer() as out:
        await out.send_many(topic, [b'{"type":"t","info":"1"}', b'{"type":"t","info":"2"}'])
    first = consumer(topic, prefetch=2, query="heartbeat_interval=2s&msg_timeout=600s&backoff=0")
    async with first:
        handed = await next_message(first)
        await asyncio.sleep(0.5)  # the second is prefetched, not handed out
        await handed.ack()
    # a requeued message comes back now, not after the 600s timeout
    async with consumer(topic) as second:
        message = await next_message(second)
        assert message.body == b'{"type":"t","info":"2"}'
        await message.ack()


async def test_a_launcher_keeps_max_in_progress_tasks_running_at_once(topic: str) -> None:
    """Issue 12: with one waiter slot only the first round (prefetched before the runners
    waited) ran at once; after it NSQ ran one task at a time whatever max_in_progress said
    (200 tasks of 100 ms at 20 took 18.8 s), the rest sitting untouched until their timeout.
    Each task here waits at a barrier of max_in_progress parties: a round passes only when
    max_in_progress tasks run at once. A barrier that waits PATIENCE in vain lets the rest go."""
    max_in_progress, rounds = 10, 3
    barrier = asyncio.Barrier(max_in_progress)
    full_rounds = 0
    stalled = asyncio.Event()

    class Together(Worker):
        task_type = "together"

        async def do_task(self, ctx: TaskContext) -> Outcome:
            nonlocal full_rounds
            if not stalled.is_set():
                try:
                    if await asyncio.wait_for(barrier.wait(), PATIENCE) == 0:
                        full_rounds += 1
                except TimeoutError:
                    stalled.set()
            return completed()

    # Given three rounds of max_in_progress tasks queued on nsqd
    done_topic = topic + "_done"
    tasks = [Task.new("together", str(i)).to_json() for i in range(rounds * max_in_progress)]
    async with producer() as out:
        await out.send_many(topic, tasks)
    # When a Launcher with max_in_progress runners works through them
    launcher = Launcher(
        Together,
        consumer(topic, prefetch=max_in_progress),
        producer(),
        LauncherOptions(
            max_in_progress=max_in_progress,
            lifetime_workers=len(tasks),
            done_topic=done_topic,
            task_type="together",
            worker_kill_time=1,
        ),
    )
    running = asyncio.create_task(launcher.run())
    stall = asyncio.create_task(stalled.wait())
    try:
        await asyncio.wait(
            {running, stall}, timeout=4 * PATIENCE, return_when=asyncio.FIRST_COMPLETED
        )
        # Then every round had max_in_progress tasks running at once
        assert full_rounds == rounds
        await running
    finally:
        stall.cancel()
        await launcher.stop()
        await asyncio.gather(running, stall, return_exceptions=True)
    # and each task was done once
    async with consumer(done_topic, prefetch=len(tasks)) as done:
        ended = []
        for _ in tasks:
            message = await next_message(done)
            task = Task.from_json(message.body)
            ended.append((int(task.info), task.result))
            await message.ack()
    assert sorted(ended) == [(i, Result.COMPLETE) for i in range(len(tasks))]
    assert launcher.stats()["tasks_redelivered"] == 0


@pytest.mark.skipif(not NSQLOOKUPD, reason="set TASK_TEST_NSQLOOKUPD=host:port to test discovery")
async def test_lookupd_discovery_finds_the_nsqd_with_the_topic(topic: str) -> None:
    url = f"nsqlookup://{NSQLOOKUPD}?{FAST}&lookup_interval=1s"
    async with open_producer(url, credentials=Credentials()) as out:
        await out.send(topic, b'{"type":"t","info":"found"}')
    async with open_consumer(
        url, topic=topic, channel="c", prefetch=1, credentials=Credentials()
    ) as found:
        message = await next_message(found)
        assert message.body == b'{"type":"t","info":"found"}'
        await message.ack()


@pytest.mark.faults
@pytest.mark.skipif(not RESTART, reason="set TASK_TEST_NSQD_RESTART to a command restarting nsqd")
async def test_consumer_and_producer_survive_an_nsqd_restart(topic: str) -> None:
    async with producer() as out, consumer(topic) as part:
        await out.send(topic, b'{"type":"t","info":"before"}')
        await (await next_message(part)).ack()
        # When nsqd restarts (its data directory kept)
        await asyncio.to_thread(subprocess.run, RESTART, shell=True, check=True)
        # Then the producer reconnects on the next send and the consumer resubscribes
        for _ in range(30):
            try:
                await out.send(topic, b'{"type":"t","info":"after"}')
                break
            except BusError:
                await asyncio.sleep(1)
        message = await asyncio.wait_for(part.msg(), 4 * PATIENCE)
        assert message is not None and message.body == b'{"type":"t","info":"after"}'
        await message.ack()
