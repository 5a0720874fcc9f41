"""Broadcast tasks (scope "all"): every worker of a type running when one is sent does it once.

A broadcast task goes to the topic ``<topic>.all`` (``taskbus send --scope all``). Each
worker instance reads that topic on a channel of its own that sees only what is sent after
it started, and that goes away when the instance stops (``task.done_follower`` follows the
done topic the same way):

- core NATS: a subscription in a queue group of its own, so every instance gets each one;
- JetStream: a consumer delivering new messages only (deliver policy "new"), deleted at
  stop and removed by the server if the instance dies;
- Kafka: every partition at its end offset at start, in no consumer group (nothing to delete);
- NSQ: an ``#ephemeral`` channel per instance, which nsqd deletes when the instance leaves;
- file: the topic's file from its end at start, no offset file (every reader sees each line);
- memory: a private copy of the topic per instance.

The task that runs carries meta ``instance=<name>`` (``hostname-pid`` unless set with
``--instance``), so each instance's done task says who did it, and the ledger records one
outstanding entry per instance (``ledger_id``).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode

from task.bus.base import BusInfo, BusPart, Consumer, Message, consumer_health
from task.bus.priority import require_topic_files
from task.bus.registry import open_consumer, scheme_of
from task.credentials import Credentials
from task.errors import InvalidTaskError
from task.task import Task

__all__ = [
    "INSTANCE_KEY", "SCOPE_ALL", "SCOPE_KEY", "BroadcastConsumer", "broadcast_topic",
    "default_instance", "is_broadcast", "ledger_id", "open_broadcast_consumer", "open_worker_broadcast",
]

#: meta key naming the worker instance that did a broadcast task
INSTANCE_KEY = "instance"
#: meta key and value ``taskbus send --scope all`` puts on a broadcast task
SCOPE_KEY = "scope"
SCOPE_ALL = "all"
#: what a channel name may hold on every bus (NSQ's rule, the strictest); the rest becomes _
_UNSAFE = re.compile(r"[^.a-zA-Z0-9_-]")
#: NSQ deletes a channel with this suffix once its last reader leaves
_NSQ_EPHEMERAL = "#ephemeral"


def broadcast_topic(topic: str) -> str:
    """The topic broadcast tasks of ``topic`` travel on: ``<topic>.all``."""
    return f"{topic}.all"


def default_instance() -> str:
    """This process's instance name: ``hostname-pid``."""
    return f"{socket.gethostname()}-{os.getpid()}"


def is_broadcast(task: Task) -> bool:
    """Whether ``task`` was sent with scope "all" and run by a named instance."""
    if SCOPE_KEY not in task.meta:  # the common case, without parsing the meta (hot path)
        return False
    return task.get_meta(SCOPE_KEY) == SCOPE_ALL and bool(task.get_meta(INSTANCE_KEY))


def ledger_id(task: Task) -> str:
    """The id the ledger records ``task`` under: ``<id>@<instance>`` for a broadcast task,
    so each instance's run is one outstanding entry of its own; the task's id otherwise
    (also for a run that ``recover`` sent again under that id)."""
    if task.id and is_broadcast(task):
        suffix = "@" + task.get_meta(INSTANCE_KEY)
        return task.id if task.id.endswith(suffix) else task.id + suffix
    return task.id


@runtime_checkable
class _ReadsFromEnd(Protocol):
    from_end: bool


def _channel_for(url: str, instance: str) -> str:
    """A channel no other reader uses: the instance name (made safe) and a random suffix,
    so two instances given the same name still each get every broadcast."""
    channel = f"{_UNSAFE.sub('_', instance)[:40]}-{uuid.uuid4().hex[:8]}"
    if scheme_of(url) in ("nsq", "nsqlookup"):
        channel += _NSQ_EPHEMERAL
    return channel


def _without_offset_file(url: str) -> str:
    """A file bus URL whose reader keeps no offset file (``offset=0``): a per-instance
    channel would otherwise leave one file per instance behind."""
    base, _, query = url.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    params["offset"] = "0"
    return f"{base}?{urlencode(params)}"


class BroadcastConsumer(BusPart):
    """Wraps the per-instance consumer of ``<topic>.all``: each task it hands out carries
    meta ``instance=<name>``; a body that is not a task passes unchanged (the Launcher
    counts it as invalid)."""

    def __init__(self, consumer: Consumer, instance: str) -> None:
        self.consumer = consumer
        self.instance = instance

    async def start(self) -> None:
        """Start the underlying consumer (subscribed from now on).

        Raises:
            BusError: the bus cannot be reached.
        """
        await self.consumer.start()

    async def msg(self) -> Message | None:
        """The next broadcast task, marked with this instance; None once stopped.

        Raises:
            BusError: the bus failed beyond recovery.
        """
        message = await self.consumer.msg()
        if message is None:
            return None
        return _InstanceMessage(message, _mark(message.body, self.instance))

    async def stop(self) -> None:
        """Stop the underlying consumer (which removes its per-instance subscription)."""
        await self.consumer.stop()

    def info(self) -> BusInfo:
        info = dict(self.consumer.info())
        info["instance"] = self.instance
        return info

    @property
    def started(self) -> bool:
        return consumer_health(self.consumer)[0]

    def health(self) -> str | None:
        return consumer_health(self.consumer)[1]


def _mark(body: bytes, instance: str) -> bytes:
    try:
        task = Task.from_json(body)
    except (InvalidTaskError, ValueError):
        return body
    task.set_meta(SCOPE_KEY, SCOPE_ALL)
    task.set_meta(INSTANCE_KEY, instance)
    return task.to_json()


class _InstanceMessage:
    """A broadcast message with this instance's name in its task; settling goes to the bus."""

    __slots__ = ("_message", "attempt", "body")

    def __init__(self, message: Message, body: bytes) -> None:
        self._message = message
        self.body = body
        self.attempt = message.attempt

    async def ack(self) -> None:
        await self._message.ack()

    async def nack(self, delay: float = 0) -> None:
        await self._message.nack(delay)

    async def in_progress(self) -> None:
        await self._message.in_progress()

    def hand_on(self) -> None:
        """Pass ``task.bus.priority``'s hand-over on to the bus's message (Kafka)."""
        hand_on = getattr(self._message, "hand_on", None)
        if hand_on is not None:
            hand_on()


def open_broadcast_consumer(
    url: str, topic: str, *, instance: str, credentials: Credentials | None = None
) -> BroadcastConsumer:
    """The per-instance consumer of ``<topic>.all`` on the bus ``url``: once started it gets
    every broadcast task sent from then on, and takes none from other instances. No I/O.

    Raises:
        ConfigError: unknown scheme, a malformed URL or option, a missing extra, a file bus
            URL that is not a directory.
    """
    if scheme_of(url) == "file":
        require_topic_files(url, "--broadcast", "<topic>.all.jsonl")
        url = _without_offset_file(url)
    consumer = open_consumer(
        url, topic=broadcast_topic(topic), channel=_channel_for(url, instance), prefetch=1,
        credentials=credentials,
    )
    if isinstance(consumer, _ReadsFromEnd):
        consumer.from_end = True
    return BroadcastConsumer(consumer, instance)


def _can_wait_for_broadcasts(url: str) -> bool:
    """Whether a worker on ``url`` can receive broadcast tasks at all: not the nop bus, and on
    the file bus only a followed directory (a worker that exits once its files are drained
    has nothing to wait for; ``file:-`` or a file path has no ``<topic>.all.jsonl``)."""
    from task.bus.file_options import FileOptions

    scheme = scheme_of(url)
    if scheme == "nop":
        return False
    if scheme != "file":
        return True
    options = FileOptions.from_url(url)
    return options.path != "-" and options.is_dir() and options.follow


def open_worker_broadcast(
    url: str, topic: str, *, instance: str = "", credentials: Credentials | None = None,
    explicit: bool = False,
) -> BroadcastConsumer | None:
    """What a worker of ``topic`` reads broadcast tasks from: this instance's subscription to
    ``<topic>.all`` (``open_broadcast_consumer``), or None where the bus cannot carry them
    (nop, ``file:-``, a file path, a file directory read once to its end) and broadcast was
    not asked for (``explicit``): it is on by default, so it does without there, silently.
    No I/O here.

    Raises:
        ConfigError: unknown scheme, a malformed URL or option, a missing extra; with
            ``explicit``, a file bus URL that is not a directory.
    """
    if not explicit and not _can_wait_for_broadcasts(url):
        return None
    return open_broadcast_consumer(url, topic, instance=instance or default_instance(),
                                   credentials=credentials)
