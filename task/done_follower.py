"""The consumer ``task.Client`` follows the done topic with: its own, from now on.

A client must see every done task sent after it opened, including the done task of a fast
worker that finishes before ``wait`` is called, and must take none from the done topic's
other readers (``retry``, ``recap``, another client). So the follower is subscribed before
``start()`` returns, on a channel of its own that reads only what is sent from then on:

- core NATS: a plain subscription in a unique queue group;
- JetStream: an ephemeral-like consumer delivering new messages (``from_end``), deleted at
  stop and removed by the server if the client dies;
- Kafka: every partition assigned at its end offset, no consumer group (``from_end``);
- NSQ: a unique ``#ephemeral`` channel, which nsqd deletes when the client leaves;
- file: a follower (``?follow=1&offset=0``) starting at the file's current end;
- memory: its own copy of the topic's messages (``from_end``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode

from task.bus.base import Consumer
from task.bus.registry import open_consumer, scheme_of
from task.credentials import Credentials
from task.errors import ConfigError

__all__ = ["follower_url", "open_done_follower"]

#: NSQ deletes a channel with this suffix once its last reader leaves
_NSQ_EPHEMERAL = "#ephemeral"


@runtime_checkable
class _ReadsFromEnd(Protocol):
    """A consumer that can start at the end of its topic instead of at its channel's position."""

    from_end: bool


def follower_url(url: str) -> str:
    """The bus URL a follower of ``url`` uses: the file bus follows its directory, live,
    without an offset file; other buses are unchanged.

    Raises:
        ConfigError: ``file:-`` (stdout cannot be followed).
    """
    if scheme_of(url) != "file":
        return url
    from task.bus.file_options import FileOptions

    options = FileOptions.from_url(url)
    if options.path == "-":
        raise ConfigError(
            "a client cannot follow done tasks on file:- (stdout); use a directory, e.g. file:./data/"
        )
    base, _, query = url.partition("?")
    if not options.is_dir():  # a file path: the producer writes topics beside it
        base = "file:" + str(Path(options.path).parent) + "/"
    params = dict(parse_qsl(query, keep_blank_values=True))
    params.update(follow="1", offset="0")
    return f"{base}?{urlencode(params)}"


def open_done_follower(url: str, *, topic: str, credentials: Credentials | None = None) -> Consumer:
    """A consumer of ``topic`` on the bus ``url`` that, once started, gets every message sent
    to it from then on and takes none from the topic's other readers. No I/O here.

    Raises:
        ConfigError: unknown scheme, a malformed URL or option, a missing extra, ``file:-``.
    """
    channel = "taskbus-client-" + uuid.uuid4().hex[:12]
    if scheme_of(url) in ("nsq", "nsqlookup"):
        channel += _NSQ_EPHEMERAL
    consumer = open_consumer(
        follower_url(url), topic=topic, channel=channel, prefetch=64, credentials=credentials
    )
    if isinstance(consumer, _ReadsFromEnd):
        consumer.from_end = True
    return consumer
