"""Several topics read in strict priority order: ``--topic high,default,low``.

``PriorityConsumer`` is itself a ``Consumer``: ``msg()`` hands out the next message of the
first non-empty topic, as Resque works ``high,default,low``, and the messages are the
underlying buses' own, so ack-after-done, nack and heartbeats work as on one topic.

How it waits without losing a message: each underlying consumer has at most its prefetch
of ``msg()`` calls outstanding (one for a lower topic, opened with a prefetch of 1), each
run as a task that is never cancelled; a result is kept until handed out (or given back at
``stop()``). So the messages held per topic stay within that consumer's prefetch.

"Non-empty" cannot be asked of a bus without a round trip, so a topic counts as empty once
its outstanding ``msg()`` has waited ``grace`` seconds (0.25 s by default) with nothing
(counted from when its consumer group gave it partitions, on Kafka, where ``joined`` says so).
While a higher topic's backlog flows (its last message came within ``grace`` of asking, or
at start-up), the next lower-priority task waits up to ``grace`` for the higher topic's next
message (the bus's fetch round trip) before it is handed out; a higher topic whose last
message came after a longer wait is taken to be empty again, so occasional high tasks do not
hold the lower topics up. A lower-priority task therefore starts ahead of a higher one only
when the higher one took longer than ``grace`` to reach this worker from the bus.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol, runtime_checkable

from task.bus.base import BusInfo, BusPart, Consumer, Message, consumer_health
from task.bus.waiters import Waiters
from task.credentials import Credentials
from task.errors import ConfigError, InvalidTaskError
from task.task import Task

__all__ = [
    "DEFAULT_GRACE", "PriorityConsumer", "open_priority_consumer", "open_worker_consumer",
    "require_topic_files", "split_topics",
]

logger = logging.getLogger(__name__)

#: seconds a higher topic's msg() must have waited with nothing before a lower topic's
#: message is handed out (covers a bus's fetch round trip between two messages)
DEFAULT_GRACE = 0.25
#: seconds stop() waits for an underlying msg() to return once its consumer is stopped
STOP_WAIT = 10.0
#: recurrent tasks handed out whose topic ``topic_of`` still remembers (the oldest go first)
TOPICS_KEPT = 10_000


class _Fetch:
    """One outstanding ``msg()`` of an underlying consumer: when it was asked, when it came."""

    __slots__ = ("came", "ran", "since", "task")

    def __init__(self, since: float, *, ran: bool = True) -> None:
        self.task: asyncio.Task[Message | None]
        self.since = since
        self.came = 0.0
        #: its msg() has run once: a message the consumer had at hand would be here by now
        self.ran = ran


async def _take(consumer: Consumer, fetch: _Fetch) -> Message | None:
    fetch.ran = True
    return await consumer.msg()


class _Lane:
    """One underlying consumer and its outstanding ``msg()`` calls, oldest first: at most
    ``depth`` (the consumer's prefetch), so what is kept never exceeds what it may hold."""

    __slots__ = ("busy", "consumer", "depth", "ended", "fetches")

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        prefetch: object = getattr(consumer, "prefetch", None) or getattr(consumer, "max_in_flight", 1)
        self.depth = prefetch if isinstance(prefetch, int) and prefetch > 0 else 1
        self.fetches: deque[_Fetch] = deque()
        #: its msg() returned None: ask no more; finished once the fetches left are used
        self.ended = False
        #: its last message came within ``grace`` of asking (a backlog is flowing), or
        #: nothing is known yet: the next may be on its way, so lower topics wait for it
        self.busy = True

    @property
    def finished(self) -> bool:
        return self.ended and not self.fetches

    def ready(self) -> _Fetch | None:
        """The oldest outstanding ``msg()`` that has returned."""
        for fetch in self.fetches:
            if fetch.task.done():
                return fetch
        return None


class PriorityConsumer(BusPart):
    """Reads ``consumers`` in order: always the first topic with a message waiting.

    Returns None once every underlying consumer is finished (a drained file) or after
    ``stop()``. ``grace`` is how long a
    higher topic's empty wait must last before a lower topic's message goes first (see the
    module docstring).
    """

    def __init__(
        self, consumers: Sequence[Consumer], *, grace: float = DEFAULT_GRACE
    ) -> None:
        if not consumers:
            raise ConfigError("a priority consumer needs at least one topic")
        self._lanes = [_Lane(c) for c in consumers]
        self.grace = grace
        #: lower-topic messages held or asked for, at most: the first topic's prefetch (the
        #: Launcher's max_in_progress)
        self.budget = self._lanes[0].depth
        #: more lower topics than the budget: each gets asked in turn (see ``_rotate``)
        self._short = len(self._lanes) - 1 > self.budget
        #: lower topics found empty since a lower-topic message was last handed out
        self._probed: set[int] = set()
        #: fetches withdrawn from a topic found empty (cancelled, finishing)
        self._withdrawn: set[asyncio.Task[Message | None]] = set()
        self._stopped = False
        self._started = False
        self._starting = asyncio.Lock()
        self._handed = [0] * len(consumers)
        #: each lane's topic name, for ``topic_of``
        self._topic_names = [_topic_name(c) for c in consumers]
        #: id of a recurrent task handed out -> the topic it came from (``topic_of``)
        self._topic_by_id: OrderedDict[str, str] = OrderedDict()
        #: msg() calls waiting, oldest first; a fetch that completes wakes one
        self._waiters = Waiters()

    @property
    def consumers(self) -> list[Consumer]:
        """The underlying consumers, highest priority first."""
        return [lane.consumer for lane in self._lanes]

    async def start(self) -> None:
        """Start every consumer, highest priority first. Idempotent.

        Raises:
            BusError: a bus cannot be reached (those started are stopped again).
        """
        if self._started or self._stopped:
            return
        async with self._starting:  # concurrent msg() calls start the consumers once
            if self._started or self._stopped:
                return
            started: list[Consumer] = []
            try:
                for lane in self._lanes:
                    await lane.consumer.start()
                    started.append(lane.consumer)
            except BaseException:
                for consumer in started:
                    await consumer.stop()
                raise
            self._started = True

    def _arm(self, index: int, now: float) -> None:
        lane = self._lanes[index]
        room = lane.depth - len(lane.fetches)
        rotating = index > 0 and self._short
        if rotating:
            if index in self._probed:
                return  # found empty this round: the budget goes to the next lower topic
            room = min(room, self.budget - sum(len(low.fetches) for low in self._lanes[1:]))
        while room > 0 and not lane.ended and not self._stopped:
            if rotating:
                fetch = _Fetch(now, ran=False)
                fetch.task = asyncio.create_task(_take(lane.consumer, fetch))
            else:
                fetch = _Fetch(now)
                fetch.task = asyncio.create_task(lane.consumer.msg())
            fetch.task.add_done_callback(partial(self._arrived, fetch))
            lane.fetches.append(fetch)
            room -= 1

    def _rotate(self, index: int, now: float) -> float:
        """Lower topic ``index`` has nothing ready while the budget cannot cover every lower
        topic: once its ``msg()`` has run, it is found empty, and its fetch is withdrawn so
        that the next lower topic not found empty this round is asked instead (``default``
        before ``low``). When every lower topic was found empty, the last one asked keeps
        the budget for ``grace`` before a new round starts. Returns 0 when it withdrew (look
        again now), else when to look again (``inf``: only on a message)."""
        lane = self._lanes[index]
        fetch = lane.fetches[-1]
        if not fetch.ran:
            return now  # after one turn of the loop
        self._probed.add(index)
        if not self._next_to_probe(index):
            if now - fetch.since < self.grace:
                return fetch.since + self.grace
            self._probed = {index}  # a new round: every lower topic is asked again
            if not self._next_to_probe(index):
                return math.inf  # the only lower topic left
        for waiting in list(lane.fetches):
            if waiting.task.done():
                continue  # a message came after all: it is handed out as usual
            lane.fetches.remove(waiting)
            waiting.task.cancel()  # msg() is cancel-safe: nothing taken is lost
            self._withdrawn.add(waiting.task)
            waiting.task.add_done_callback(partial(self._withdrawn_done, lane, waiting))
        lane.busy = False
        return 0.0

    def _next_to_probe(self, index: int) -> bool:
        return any(j != index and j not in self._probed and not low.ended and not low.fetches
                   for j, low in enumerate(self._lanes) if j)

    def _withdrawn_done(self, lane: _Lane, fetch: _Fetch, task: asyncio.Task[Message | None]) -> None:
        self._withdrawn.discard(task)
        if not task.cancelled():  # it returned before the cancellation reached it: keep it
            lane.fetches.appendleft(fetch)
            self._waiters.wake_one()

    def _arrived(self, fetch: _Fetch, task: asyncio.Task[Message | None]) -> None:
        fetch.came = task.get_loop().time()
        self._waiters.wake_one()

    def _any_ready(self) -> bool:
        return any(lane.ready() is not None for lane in self._lanes)

    async def msg(self) -> Message | None:
        """The next message of the highest-priority topic that has one; None when every
        topic is finished or after ``stop()``.

        Raises:
            BusError: an underlying consumer failed beyond recovery.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        while not self._stopped:
            now = loop.time()
            deadline = 0.0  # while > 0: a higher topic is still young until then
            look_again = math.inf  # a lower topic's turn (``_rotate``) ends then
            for index, lane in enumerate(self._lanes):
                self._arm(index, now)
                fetch = lane.ready()
                if fetch is None:
                    if not lane.fetches:
                        continue  # finished
                    if getattr(lane.consumer, "joined", True) is False:
                        lane.busy = True  # a Kafka group forming: nothing known yet
                        for waiting in lane.fetches:
                            waiting.since = now
                    newest = lane.fetches[-1].since
                    if lane.busy and now - newest < self.grace:
                        deadline = max(deadline, newest + self.grace)
                    elif index and self._short:
                        look_again = min(look_again, self._rotate(index, now))
                        if not look_again:
                            break  # withdrawn: arm the next lower topic
                    continue
                if deadline:
                    break  # a message is ready here, but a higher topic may still deliver
                lane.fetches.remove(fetch)
                message = fetch.task.result()  # re-raises a bus failure
                if message is None:
                    lane.ended = True
                    continue
                self._handed[index] += 1
                if b"every=" in message.body:  # a recurrent task, maybe: its next run comes back here
                    self._remember_topic(message.body, index)
                hand_on = getattr(message, "hand_on", None)
                if hand_on is not None:
                    hand_on()  # Kafka: the caller's sends count towards the message, not ours
                came = fetch.came or now  # its done callback may not have run yet
                lane.busy = came - fetch.since < self.grace
                if index and self._short:
                    self._probed.clear()  # ask the lower topics again, highest first
                    for lower in range(1, len(self._lanes)):
                        self._arm(lower, now)
                else:
                    self._arm(index, now)  # eager: the topic's idle time counts from now
                if self._any_ready():
                    self._waiters.wake_one()  # more is ready: pass the wake-up on
                return message
            if not look_again:
                continue
            if all(lane.finished for lane in self._lanes) and not self._withdrawn:
                self._waiters.wake_all()
                return None  # every topic is finished
            wake = min(deadline or math.inf, look_again)
            if wake == math.inf:
                await self._waiters.wait(self._any_ready)
                continue
            try:
                async with asyncio.timeout_at(wake):
                    await self._waiters.wait(self._any_ready)
            except TimeoutError:
                pass  # the higher topics had their grace: look again
        return None

    def _remember_topic(self, body: bytes, lane: int) -> None:
        try:
            task_id = Task.from_json(body).id
        except (InvalidTaskError, ValueError):
            return  # the Launcher counts it as invalid; it never recurs
        if task_id:
            self._topic_by_id[task_id] = self._topic_names[lane]
            if len(self._topic_by_id) > TOPICS_KEPT:
                self._topic_by_id.popitem(last=False)

    def topic_of(self, task: Task) -> str | None:
        """The topic a recurrent task handed out came from (so its next run goes back to
        ``low``, not to the first topic), forgotten once asked; None when not known.
        ``task.recurrent.Recurrence`` asks it for each done task with ``every=``."""
        return self._topic_by_id.pop(task.id, None) if task.id else None

    async def stop(self) -> None:
        """Stop every consumer; a message taken from a topic and not handed out goes back
        (``nack(0)``, or to a core NATS consumer's held messages, which its ``stop()``
        publishes back), never lost. Idempotent."""
        if self._stopped:
            for lane in self._lanes:
                await lane.consumer.stop()
            return
        self._stopped = True
        self._waiters.wake_all()
        if self._withdrawn:  # cancelled; one that returned first is put back and given back below
            await asyncio.wait(set(self._withdrawn), timeout=STOP_WAIT)
        for lane in self._lanes:
            fetches, lane.fetches = list(lane.fetches), deque()
            lane.ended = True
            for fetch in fetches:
                if fetch.task.done():
                    await _give_back(fetch.task, lane.consumer)
            await lane.consumer.stop()
            waiting = [fetch.task for fetch in fetches if not fetch.task.done()]
            if not waiting:
                continue
            # a consumer's msg() returns None after stop(); one that took a message just
            # before still hands it over, and it goes back
            await asyncio.wait(waiting, timeout=STOP_WAIT)
            for task in waiting:
                if task.done():
                    await _give_back(task, lane.consumer)
                else:
                    logger.warning("a consumer of %r did not return from msg() after stop()",
                                   lane.consumer.info().get("topic"))

    def info(self) -> BusInfo:
        """Every topic's info under ``topics``, with how many messages each handed out."""
        topics = []
        for lane, handed in zip(self._lanes, self._handed, strict=True):
            info = dict(lane.consumer.info())
            info["handed_out"] = handed
            topics.append(info)
        return {"bus": "priority", "topics": topics}

    @property
    def started(self) -> bool:
        """Every underlying consumer has started (``ReportsHealth``)."""
        return all(consumer_health(lane.consumer)[0] for lane in self._lanes)

    def health(self) -> str | None:
        """The first problem among the underlying consumers, or None."""
        for lane in self._lanes:
            problem = consumer_health(lane.consumer)[1]
            if problem is not None:
                return problem
        return None


def _topic_name(consumer: Consumer) -> str:
    topic = getattr(consumer, "topic", None)
    return topic if isinstance(topic, str) else str(consumer.info().get("topic") or "")


@runtime_checkable
class _Unreads(Protocol):
    """A consumer that takes back a message its ``msg()`` handed out (core NATS, whose nack
    cannot redeliver: its ``stop()`` publishes what it holds back to the subject)."""

    def unread(self, message: Any) -> None: ...


async def _give_back(fetch: asyncio.Task[Message | None], consumer: Consumer) -> None:
    """Return a kept message to its bus; a failed fetch has nothing to return."""
    if fetch.cancelled() or fetch.exception() is not None:
        return
    message = fetch.result()
    if message is None:
        return
    if isinstance(consumer, _Unreads):
        consumer.unread(message)  # before the consumer's stop(), which gives it back
        return
    try:
        await message.nack(0)
    except Exception as err:  # noqa: BLE001 - the bus redelivers it after its lease anyway
        logger.warning("cannot give back a prefetched message: %s", err)


def split_topics(topics: str) -> list[str]:
    """``"high,default,low"`` as a list, highest priority first.

    Raises:
        ConfigError: an empty name in the list, or a topic named twice.
    """
    if "," not in topics:
        return [topics]  # one topic (an empty one is refused where a consumer is opened)
    names = [name.strip() for name in topics.split(",")]
    if any(not name for name in names):
        raise ConfigError(f"--topic {topics!r} has an empty name; give topics as high,default,low")
    if len(set(names)) != len(names):
        raise ConfigError(f"--topic {topics!r} names a topic twice; each priority needs its own topic")
    return names


def require_topic_files(url: str, feature: str, reads: str) -> None:
    """On the file bus, each topic has its own file only when the URL is a directory.

    Raises:
        ConfigError: ``url`` is ``file:-`` or a file path (every topic would read that one).
    """
    from task.bus.file_options import FileOptions
    from task.bus.registry import scheme_of

    if scheme_of(url) != "file":
        return
    options = FileOptions.from_url(url)
    if options.path == "-" or not options.is_dir():
        raise ConfigError(
            f"{feature} on the file bus needs a directory (it reads {reads} there), "
            f"not {options.path!r}; use e.g. file:./data/"
        )


def open_priority_consumer(
    url: str,
    topics: Sequence[str],
    *,
    channel: str,
    prefetch: int,
    credentials: Credentials | None = None,
    grace: float = DEFAULT_GRACE,
) -> PriorityConsumer:
    """A ``PriorityConsumer`` over one consumer per topic on the bus ``url``, all on
    ``channel``. The first topic gets ``prefetch`` (the Launcher's ``max_in_progress``);
    each lower topic gets a prefetch of 1, so at most one lower-priority message per
    lower topic is held when a higher one arrives. No I/O here.

    Raises:
        ConfigError: unknown scheme, a malformed URL or option, a missing extra.
    """
    from task.bus.registry import open_consumer

    require_topic_files(url, "--topic with several topics", "<topic>.jsonl of each")
    consumers = [
        open_consumer(url, topic=topic, channel=channel, prefetch=prefetch if i == 0 else 1,
                      credentials=credentials)
        for i, topic in enumerate(topics)
    ]
    return PriorityConsumer(consumers, grace=grace)


def open_worker_consumer(
    url: str,
    topics: Sequence[str],
    *,
    channel: str,
    prefetch: int,
    credentials: Credentials | None = None,
) -> Consumer:
    """What ``taskbus worker`` reads: ``topics`` (highest priority first, as
    ``split_topics`` gives them) on ``url``. A single topic is its bus's own consumer,
    unwrapped (broadcast tasks come on a reader of their own beside it, see
    ``task.bus.broadcast.open_worker_broadcast``). No I/O here.

    Raises:
        ConfigError: unknown scheme, a bad URL or option, a missing extra.
    """
    from task.bus.registry import open_consumer

    if len(topics) == 1:
        return open_consumer(url, topic=topics[0], channel=channel, prefetch=prefetch, credentials=credentials)
    return open_priority_consumer(url, topics, channel=channel, prefetch=prefetch, credentials=credentials)
