"""The Kafka consumer: a member of the group ``channel``, prefetch-bounded, safe commits.

Several messages of one partition may run at once (``prefetch`` > 1), so the offset
committed for a partition is its lowest unfinished message (see ``task.bus.kafka_offsets``):
a crash redelivers every unfinished task and never skips one. Commits are batched by count
(half the prefetch unless ``commit_every`` says otherwise, so a crash redoes few done tasks)
and time.

A message whose done task was sent through a Kafka producer while it was held settles when
that delivery is confirmed (``task.bus.kafka_delivery``): one background loop follows the
deliveries in acknowledgement order, so a batch confirmed by the broker settles at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from task.backoff import Backoff
from task.bus.base import BusInfo, BusPart
from task.bus.kafka_delivery import HANDED
from task.bus.kafka_offsets import OffsetBook, PartitionOffsets
from task.bus.kafka_options import KafkaOptions, ensure_topic, unreachable
from task.bus.kafka_partitions import PartitionLists
from task.bus.kafka_producer import start_producer
from task.bus.waiters import Waiters
from task.errors import BusClosedError, BusError

__all__ = ["ATTEMPT_HEADER", "KafkaConsumer", "KafkaMessage"]

logger = logging.getLogger(__name__)

#: header a ``nack`` re-publish carries: how many deliveries the message already had
ATTEMPT_HEADER = "taskbus-attempt"
#: a full consumer waits this long for a free slot before pausing its partitions outright
PAUSE_AFTER = 2.0
#: Waits between fetches that failed with an error Kafka calls retriable (a leader moving).
FETCH_RETRY = Backoff(first=0.2, cap=5.0)
#: seconds before a message whose done task could not be delivered comes back, as the
#: Launcher gives back one whose done task it could not send
GIVE_BACK_DELAY = 1.0


class KafkaMessage:
    """One record handed out by a ``KafkaConsumer``."""

    __slots__ = (
        "_consumer", "_delivery", "_holder", "_more_deliveries", "_offset", "_part", "_settled", "_tp",
        "attempt", "body", "key",
    )

    def __init__(
        self, consumer: KafkaConsumer, record: Any, tp: TopicPartition, part: PartitionOffsets,
        attempt: int,
    ) -> None:
        self.body: bytes = record.value or b""
        self.attempt = attempt
        self.key: bytes | None = record.key
        self._consumer = consumer
        self._tp = tp
        self._part = part
        self._offset: int = record.offset
        self._settled = False
        self._holder: asyncio.Task[Any] | None = None  # the task it was handed to
        #: the delivery of the first record sent for it (its done task's batch), and of any
        #: other record sent for it in another batch: one slot for the common case, no list
        self._delivery: asyncio.Future[Any] | None = None
        self._more_deliveries: list[asyncio.Future[Any]] | None = None

    def hand_on(self) -> None:
        """The running task takes the message over from the task that called ``msg()`` (a
        ``task.bus.priority`` reader fetches in helper tasks): its sends count towards it."""
        self._holder = asyncio.current_task(self._consumer._loop)
        HANDED.set(self)

    def takes_delivery(self) -> bool:
        """Unsettled, and the running task is the one it was handed to (not a task the
        worker started, whose sends wait for their own delivery)."""
        # current_task() with the loop given: without it, Python 3.11 asks the kernel for the
        # process id (fork check) on every call, a system call per message
        return not self._settled and self._holder is asyncio.current_task(self._consumer._loop)

    def delivery(self, future: asyncio.Future[Any]) -> None:
        """Settle only once ``future`` (a record sent for this message) is delivered."""
        first = self._delivery
        if first is None:
            self._delivery = future
        elif future is not first:  # records in one batch share its future
            if self._more_deliveries is None:
                self._more_deliveries = [future]
            else:
                self._more_deliveries.append(future)

    def _deliveries(self) -> list[asyncio.Future[Any]]:
        """Every delivery this message waits for."""
        first = self._delivery
        return ([] if first is None else [first]) + (self._more_deliveries or [])

    def partition_like(self, key: bytes | None, partitions: int) -> int | None:
        """This message's partition number, for a done task sent for it to a topic with as
        many partitions as this message's, when its key allows; else None (the caller hashes).

        - The same key as this message's record: the default partitioner (murmur2 of the key,
          modulo the partitions) put this message there and puts that record on the same
          number, so this is the hashed answer without a Python murmur2 (which costs more
          than the rest of a no-op task's handling).
        - This message's record had no key: its producer chose no placement (aiokafka and
          the Java client then pick at random), so its done task goes with it rather than
          paying for a hash. The done topic's records of one task stay together either way.
        """
        own_key = self.key
        if own_key is not None and own_key != key:
            return None
        # the count read once per fetch, not per message (see KafkaConsumer._fetch_loop)
        return self._tp.partition if self._consumer._own_partitions == partitions else None

    async def ack(self) -> None:
        """Done: its offset may be committed once every earlier one of its partition is, and
        the records sent for it (its done task) are delivered. Returns without waiting for
        those deliveries; one that fails gives the message back as ``nack`` does."""
        if not self._settled:
            self._settled = True
            consumer = self._consumer
            consumer._finish(self)
            if consumer._stopped:
                await consumer._closed_when_settled()

    async def nack(self, delay: float = 0) -> None:
        """Re-publish the body after ``delay`` seconds with attempt + 1, then count this one done.

        Returns at once; the re-publish runs in the background. A closing consumer publishes
        waiting re-publishes at once. After ``stop()`` the message is only left uncommitted,
        so the group's next member gets it again.
        """
        if not self._settled:
            self._settled = True
            self._consumer._redeliver(self, delay)
            await self._consumer._closed_when_settled()

    async def in_progress(self) -> None:
        """Nothing to extend: Kafka has no lease and the consumer keeps polling meanwhile."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._consumer.joined = False
        await self._consumer._revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._consumer.joined = True
        logger.info("kafka group %s: assigned %s", self._consumer.channel, sorted(assigned))


class KafkaConsumer(BusPart):
    """A member of the consumer group ``channel`` on ``topic``, holding up to ``prefetch``.

    A background loop fetches while fewer than ``prefetch`` messages are held (queued or
    handed out and not settled); when full it stops taking records (aiokafka then stops
    fetching after one batch), and when still full after ``PAUSE_AFTER`` seconds it pauses
    its partitions and keeps polling, so the group never takes long tasks for a dead member.

    ``stop()`` stops taking records but stays in the group while handed-out messages are
    unsettled, as the other buses keep their connection: the Launcher acknowledges tasks
    that end after the stop began (those it cancels at ``worker_kill_time`` too), and those
    acknowledgements must reach the committed offset. The last settlement, a second
    ``stop()`` or leaving ``async with`` commits and leaves the group.

    With ``from_end`` it joins no group and commits nothing: ``start()`` takes every
    partition at its end offset, so it reads exactly the records sent after ``start()``
    returned, taking none from anyone (what ``task.Client`` uses to follow the done topic).
    """

    #: the group has given this member its partitions (False again during a rebalance):
    #: until then an empty ``msg()`` says nothing about the topic (``task.bus.priority``)
    joined = False

    def __init__(
        self, options: KafkaOptions, topic: str, channel: str, prefetch: int = 1, *, from_end: bool = False
    ) -> None:
        self.from_end = from_end
        self.options = options
        self.topic = topic
        self.channel = channel or topic
        self.prefetch = max(1, prefetch)
        self._book: OffsetBook[TopicPartition] = OffsetBook(
            every=options.commit_every or max(1, self.prefetch // 2), interval=options.commit_interval
        )
        self._queue: deque[KafkaMessage] = deque()
        self._in_hand = 0
        #: acknowledged messages whose done tasks are not delivered yet, in ack order
        self._delivering: deque[KafkaMessage] = deque()
        self._delivery_wake = asyncio.Event()
        #: acknowledged messages waiting for their done task's delivery that take no room: two
        #: prefetches, so the runners keep going while one round of done tasks (about a
        #: prefetch or more) is on its way and the next fills; with less they sat idle for
        #: a produce round trip per round. A crash still redoes only the round on its way
        #: and what was delivered since the last commit (see docs/kafka-speed.md)
        self._delivery_allowance = 2 * self.prefetch
        #: fetch again once this much room is free (or nothing is queued): not per message
        self._refill = max(1, self.prefetch // 2)
        self._room_free = asyncio.Event()
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it started in
        self._partitions: PartitionLists | None = None
        #: how many partitions the topic has, as the metadata knew at the last fetch (0: unknown)
        self._own_partitions = 0
        self._republisher: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._redeliveries: dict[asyncio.Task[None], KafkaMessage] = {}
        self._hurry: asyncio.Event = asyncio.Event()
        self._waiters = Waiters()  # msg() calls waiting, oldest first: one per runner
        self._settled = asyncio.Event()  # a handed-out message was settled
        self._commit_now = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._republisher_lock = asyncio.Lock()
        self._failure: BusError | None = None
        self._stopped = False
        self._closing: asyncio.Task[None] | None = None
        self._received = self._acked = self._commits = 0

    async def start(self) -> None:
        """Create the topic if missing, join the group and start fetching.

        Raises:
            BusError: the brokers cannot be reached.
            BusClosedError: called after ``stop()``.
        """
        async with self._start_lock:  # concurrent msg() callers start it once
            await self._start()

    async def _start(self) -> None:
        if self._stopped:
            raise BusClosedError("Kafka consumer used after stop()")
        if self._client is not None:
            return
        await ensure_topic(self.options, self.topic)
        client = AIOKafkaConsumer(
            group_id=None if self.from_end else self.channel, enable_auto_commit=False,
            auto_offset_reset=self.options.offset_reset,
            session_timeout_ms=int(self.options.session_timeout * 1000),
            heartbeat_interval_ms=int(self.options.session_timeout * 1000 / 3),
            # the group waits for our revocation drain rather than evicting us meanwhile
            rebalance_timeout_ms=int((self.options.drain_timeout + self.options.session_timeout) * 1000),
            **self.options.client_args(),
        )
        try:
            await client.start()
        except KafkaError as err:
            await client.stop()
            raise unreachable(self.options, err) from err
        if self.from_end:
            await self._assign_at_end(client)
            self.joined = True
        else:
            client.subscribe([self.topic], listener=_Listener(self))
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._partitions = PartitionLists(client)
        self._tasks = [
            asyncio.create_task(self._fetch_loop()), asyncio.create_task(self._commit_loop()),
            asyncio.create_task(self._settle_loop()),
        ]

    async def _assign_at_end(self, client: Any) -> None:
        """Take every partition and fix its position at the end now, not at the first fetch."""
        try:
            # aiokafka has no public "partitions of a topic, waiting for metadata" on a consumer
            ids = await client._client._wait_on_metadata(self.topic)
            partitions = [TopicPartition(self.topic, i) for i in sorted(ids)]
            client.assign(partitions)
            await client.seek_to_end(*partitions)
            for tp in partitions:
                await client.position(tp)
        except KafkaError as err:
            await client.stop()
            raise unreachable(self.options, err) from err

    async def msg(self) -> KafkaMessage | None:
        """The next message; None after ``stop()``.

        Raises:
            BusError: fetching failed for good (the message says why).
        """
        if self._client is None and not self._stopped:
            await self.start()
        while not self._stopped:
            if self._queue:
                message = self._queue.popleft()
                if message._part.revoked:
                    continue
                message._part.handed(message._offset)
                self._in_hand += 1
                message._holder = asyncio.current_task(self._loop)
                HANDED.set(message)  # this task's Kafka sends count towards the message
                if self._queue:
                    self._waiters.wake_one()  # more are queued: pass the wake-up on
                else:
                    self._room_free.set()  # runners may go idle: fetch whatever room there is
                return message
            if self._failure is not None:
                raise self._failure
            await self._waiters.wait(lambda: bool(self._queue))
        return None

    def _room(self) -> int:
        """How many more messages to fetch: the prefetch counts queued, handed-out and, beyond
        two prefetches, acknowledged messages whose done tasks are still on their way. That
        allowance keeps the runners busy during the broker's answer to a round of done tasks
        rather than idle for a round trip per prefetch, and bounds what a crash redoes."""
        delivering = len(self._delivering) - self._delivery_allowance
        return self.prefetch - len(self._queue) - self._in_hand - max(0, delivering)

    def _wants_fetch(self) -> bool:
        """Room for half the prefetch, or any room while nothing is queued: one fetch per
        half-batch rather than per settled message while the worker is the bottleneck."""
        room = self._room()
        return room >= self._refill or (room > 0 and not self._queue)

    async def _fetch_loop(self) -> None:
        client, paused, failures = self._client, False, 0
        while True:  # until cancelled at close
            try:
                if self._stopped:  # take nothing more, but poll: the group keeps this member
                    client.pause(*client.assignment())
                    await client.getmany(timeout_ms=200)
                    continue
                if not self._wants_fetch():
                    if not paused and await self._wait_room(PAUSE_AFTER):
                        continue
                    paused = True
                    client.pause(*client.assignment())
                    batches = await client.getmany(timeout_ms=200)  # keeps the member alive
                else:
                    if paused:
                        client.resume(*client.paused())
                        paused = False
                    batches = await client.getmany(timeout_ms=1000, max_records=self._room())
            except KafkaError as err:
                if getattr(err, "retriable", False):
                    logger.warning("kafka fetch on %s failed, retrying: %r", self.topic, err)
                    await asyncio.sleep(FETCH_RETRY.delay(failures))
                    failures += 1
                    continue
                self._failure = BusError(f"Kafka consumer of {self.topic!r} failed: {err!r}")
                self._waiters.wake_all()
                return
            failures = 0
            if self._stopped:
                continue  # fetched as stop() began: never handed out, so never committed
            if batches:
                own = self._partitions.of(self.topic) if self._partitions is not None else None
                self._own_partitions = len(own) if own else 0
            queue = self._queue
            for tp, records in batches.items():
                part = self._book.partition(tp)
                for record in records:
                    headers = record.headers  # mostly none: no call to look through them
                    queue.append(KafkaMessage(self, record, tp, part, _attempt(headers) if headers else 1))
                self._received += len(records)
            if queue:
                self._waiters.wake_one()

    async def _wait_room(self, timeout: float) -> bool:
        self._room_free.clear()
        if self._wants_fetch():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._room_free.wait()
        except TimeoutError:
            return False
        return True

    async def _wait_settled(self, timeout: float) -> bool:
        self._settled.clear()
        try:
            async with asyncio.timeout(timeout):  # not wait_for: in 3.11 it can eat a cancel
                await self._settled.wait()
        except TimeoutError:
            return False
        return True

    def _freed(self) -> None:
        """A message stopped holding room or its offset: wake the fetcher and the drains."""
        self._settled.set()
        if self._wants_fetch():
            self._room_free.set()

    def _finish(self, message: KafkaMessage) -> None:
        self._in_hand -= 1
        self._acked += 1
        if message._delivery is not None:
            delivering = self._delivering
            if not delivering:
                self._delivery_wake.set()  # _settle_loop sleeps only when there is none
            delivering.append(message)  # settled by _settle_loop once delivered
            if not self._queue and len(delivering) <= self._delivery_allowance:
                # within the allowance this acknowledgement freed room: a fetcher waiting for
                # room with nothing queued would otherwise keep the runners idle until a
                # delivery (a produce round trip per prefetch)
                self._room_free.set()
        else:
            self._done(message)

    def _done(self, message: KafkaMessage) -> None:
        self._book.finished(message._part, message._offset)
        self._freed()
        if self._book.count_due():
            self._commit_now.set()

    async def _settle_loop(self) -> None:
        """Settle acknowledged messages as their deliveries are confirmed, oldest first:
        one wake-up per delivered batch, not per message."""
        delivering, book = self._delivering, self._book
        while True:  # until cancelled at close
            if not delivering:
                self._delivery_wake.clear()
                await self._delivery_wake.wait()
                continue
            pending = [future for future in delivering[0]._deliveries() if not future.done()]
            if pending:
                await asyncio.wait(pending)  # not `await future`: a cancel must not reach it
            settled = 0
            # the messages of one record batch share its future: it is checked once for them,
            # and their offsets are finished together, a run of one partition at a time
            checked: asyncio.Future[Any] | None = None
            failure: BaseException | None = None
            part: PartitionOffsets | None = None
            offsets: list[int] = []
            while delivering:
                message = delivering[0]
                future = message._delivery
                if message._more_deliveries is None:  # the common case: one batch, no generators
                    if future is not checked:
                        if future is None or not future.done():
                            break
                        checked, failure = future, _failure(future)
                    failed = failure
                else:
                    deliveries = message._deliveries()
                    if not all(each.done() for each in deliveries):
                        break
                    failed = next(filter(None, map(_failure, deliveries)), None)
                delivering.popleft()
                if failed is not None:
                    self._undelivered(message, failed)
                    continue
                if message._part is not part:
                    if part is not None:
                        book.finished_all(part, offsets)
                    part, offsets = message._part, []
                offsets.append(message._offset)
                settled += 1
            if part is not None:
                book.finished_all(part, offsets)
            if settled:
                self._freed()
                if self._book.count_due():
                    self._commit_now.set()

    def _undelivered(self, message: KafkaMessage, failure: BaseException) -> None:
        """A record sent for ``message`` was not delivered (``failure``): it comes back, as
        after a nack."""
        self._freed()
        if self._stopped:
            logger.error("kafka: a record sent for %s@%d was not delivered (%r); leaving the "
                         "message uncommitted", message._tp, message._offset, failure)
            return  # the next member of the group gets it again
        logger.error("kafka: a record sent for %s@%d was not delivered (%r); the message "
                     "comes back in %gs", message._tp, message._offset, failure, GIVE_BACK_DELAY)
        self._republish_later(message, GIVE_BACK_DELAY)

    def _redeliver(self, message: KafkaMessage, delay: float) -> None:
        self._in_hand -= 1
        self._freed()
        if self._stopped:
            return  # left uncommitted: the next member of the group gets it again
        self._republish_later(message, delay)

    def _republish_later(self, message: KafkaMessage, delay: float) -> None:
        task = asyncio.create_task(self._republish(message, delay))
        self._redeliveries[task] = message
        task.add_done_callback(self._redeliveries.pop)

    async def _republish(self, message: KafkaMessage, delay: float) -> None:
        if delay > 0:
            try:
                async with asyncio.timeout(delay):
                    await self._hurry.wait()
            except TimeoutError:
                pass
        try:
            async with self._republisher_lock:  # one re-publisher, even when nacks race
                if self._republisher is None:
                    self._republisher = await start_producer(self.options)
            headers = [(ATTEMPT_HEADER, str(message.attempt).encode())]
            await self._republisher.send_and_wait(
                self.topic, message.body, key=message.key, partition=message._tp.partition,
                headers=headers,
            )
        except (KafkaError, BusError) as err:
            logger.error("kafka nack of %s@%d could not re-publish, leaving it uncommitted: %r",
                         message._tp, message._offset, err)
            return
        self._done(message)

    async def _commit_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.options.commit_interval):
                    await self._commit_now.wait()
            except TimeoutError:
                pass
            self._commit_now.clear()
            await self._commit()

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        async with self._commit_lock:
            offsets = self._book.to_commit(partitions)
            if partitions is None:
                self._book.taken()
            if not offsets or self._client is None or self.from_end:
                return
            try:
                await self._client.commit(offsets)
            except KafkaError as err:  # a rebalance: the revocation path commits what is safe
                logger.warning("kafka commit on %s failed: %r", self.topic, err)
                return
            self._book.committed(offsets)
            self._commits += 1

    async def _drain(self, partitions: set[TopicPartition], what: str) -> None:
        """Wait up to ``drain_timeout`` for handed-out messages of ``partitions`` to settle."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.drain_timeout
        await self._republish_now(deadline)
        while self._unsettled(partitions) and loop.time() < deadline:
            await self._wait_settled(min(0.5, max(0.0, deadline - loop.time())))
        left = self._unsettled(partitions)
        if left:
            logger.warning("kafka %s: %d tasks still running after drain_timeout=%.1fs; "
                           "they will run again on the partition's next owner",
                           what, left, self.options.drain_timeout)

    async def _republish_now(self, deadline: float) -> None:
        """Send waiting nack re-publishes at once rather than after their delay."""
        if self._redeliveries:
            self._hurry.set()
            timeout = max(0.1, deadline - asyncio.get_running_loop().time())
            await asyncio.wait(list(self._redeliveries), timeout=timeout)
            self._hurry.clear()

    def _unsettled(self, partitions: set[TopicPartition]) -> int:
        return self._book.unfinished(partitions)

    async def _revoke(self, partitions: set[TopicPartition]) -> None:
        """Rebalance: drop their queued messages, let running ones finish, commit, release."""
        self._queue = deque(m for m in self._queue if m._tp not in partitions)
        await self._drain(partitions, f"revoking {sorted(partitions)}")
        await self._commit(partitions)
        self._book.revoke(partitions)

    async def stop(self) -> None:
        """Stop taking records; messages fetched but not handed out stay uncommitted (the
        group's next member reads them). Idempotent.

        The consumer stays in the group, committing, while handed-out messages are unsettled,
        and leaves it when the last is settled; a second ``stop()`` leaves it at once, giving
        what is still unsettled to the partition's next owner.
        """
        if self._stopped:
            await self._close()
            return
        self._stopped = True
        self._waiters.wake_all()
        if self._client is None:
            return
        returned = len(self._queue)
        self._queue.clear()
        if returned:
            logger.info("kafka: %d prefetched messages of %r stay for the group's next member",
                        returned, self.topic)
        await self._closed_when_settled()

    async def __aexit__(self, *exc: object) -> None:
        """Leaving ``async with`` leaves the group at once: messages not settled by then run
        again on the partition's next owner."""
        await self.stop()
        await self._close()

    async def _closed_when_settled(self) -> None:
        if self._stopped and self._in_hand <= 0:
            await self._close()

    async def _close(self) -> None:
        """Commit what is settled and leave the group; concurrent callers share one close,
        and a caller cancelled meanwhile does not cut it short."""
        if self._client is None:
            return
        if self._closing is None:
            self._closing = asyncio.create_task(self._leave())
        await asyncio.shield(self._closing)

    async def _leave(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.drain_timeout
        while self._delivering and loop.time() < deadline:  # done tasks sent, not confirmed
            await self._wait_settled(min(0.5, max(0.0, deadline - loop.time())))
        if self._delivering:
            logger.warning("kafka: leaving group %s with %d done tasks not confirmed; their "
                           "tasks will run again on the partition's next owner",
                           self.channel, len(self._delivering))
        await self._republish_now(deadline)
        if self._in_hand:
            logger.warning("kafka: leaving group %s with %d messages unsettled; they will run "
                           "again on the partition's next owner", self.channel, self._in_hand)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._commit()
        client, self._client = self._client, None
        await client.stop()
        if self._republisher is not None:
            await self._republisher.stop()

    def info(self) -> BusInfo:
        client = self._client
        return {
            "bus": "kafka", "topic": self.topic, "channel": self.channel,
            "received": self._received, "acked": self._acked, "in_flight": self._in_hand,
            "delivering": len(self._delivering),
            "queued": len(self._queue), "commits": self._commits,
            "partitions": sorted(tp.partition for tp in client.assignment()) if client else [],
        }

    @property
    def started(self) -> bool:
        """Joined and fetching (stays True after ``stop()``)."""
        return bool(self._tasks)

    def health(self) -> str | None:
        """Why messages cannot arrive now, or None: fetching failed for good, or no broker
        answers (aiokafka retries without saying so; its client tells: no connection is up
        and its last metadata request failed, which is not the case just after start)."""
        if self._failure is not None:
            return str(self._failure)
        kafka = getattr(self._client, "_client", None)
        if kafka is None or self._stopped:
            return None
        cluster = getattr(kafka, "cluster", None)
        failed = getattr(cluster, "_last_refresh_ms", 0) > getattr(cluster, "_last_successful_refresh_ms", 0)
        if failed and not any(conn.connected() for conn in getattr(kafka, "_conns", {}).values()):
            return f"no Kafka broker answers for {self.topic!r}; reconnecting"
        return None


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    """Why a delivery future failed, or None when it was delivered."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


def _attempt(headers: Any) -> int:
    for name, value in headers or ():
        if name == ATTEMPT_HEADER:
            try:
                return int(value) + 1
            except ValueError:
                return 1
    return 1
