"""JetStream layout: the options of a ``jetstream://`` URL and the stream of a topic.

Shared by the producer and the consumer, since whichever side needs a stream first creates
it. See ``task.bus.jetstream`` for what the options mean.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from task.bus.deadletter import dead_letter_envelope
from task.bus.nats_connect import CONNECT_PARAMS, DEFAULT_PORT, ConnectOptions
from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.url import parse_url

__all__ = ["JetStreamOptions", "dead_letter_record", "ensure_stream", "stream_name"]

logger = logging.getLogger(__name__)

_PARAMS = (
    *CONNECT_PARAMS, "ack_wait", "max_deliver", "max_ack_pending", "dead_letter",
    "max_age", "replicas", "storage", "publish_timeout", "publish_retries", "dedupe",
)
_NOT_NAME = re.compile(r"[^A-Z0-9]")


def stream_name(topic: str) -> str:
    """``TASK_<TOPIC>``: the topic upper-cased, every character but A-Z and 0-9 made ``_``."""
    return "TASK_" + _NOT_NAME.sub("_", topic.upper())


@dataclass(frozen=True)
class JetStreamOptions:
    """Everything a ``jetstream://`` URL (plus credentials from settings) says."""

    connect: ConnectOptions
    ack_wait: float = 30.0
    max_deliver: int = 5  #: -1: no limit
    max_ack_pending: int = 1000  #: for the whole channel; raised to the prefetch if lower
    dead_letter: str | None = None
    max_age: float = 7 * 86400.0
    replicas: int = 1
    storage: StorageType = StorageType.FILE
    publish_timeout: float = 5.0
    publish_retries: int = 5
    #: a ``Nats-Msg-Id`` on every done task, so a publish retried after a lost PubAck is
    #: stored once; off, such a retry can store the done task twice (and the server and the
    #: worker do less per task)
    dedupe: bool = True

    @classmethod
    def from_url(cls, url: str, credentials: Credentials | None = None) -> JetStreamOptions:
        """Options from a ``jetstream://`` URL.

        Raises:
            ConfigError: an unknown or malformed option.
        """
        parsed = parse_url(url, DEFAULT_PORT)
        parsed.check_options(_PARAMS)
        storage = parsed.text("storage", "file").lower()
        if storage not in ("file", "memory"):
            raise ConfigError(
                f"jetstream option 'storage' in {parsed.redacted()}: {storage!r}; use file or memory"
            )
        max_deliver = parsed.integer("max_deliver", 5, minimum=-1)
        if max_deliver == 0:
            raise ConfigError(f"jetstream option 'max_deliver' in {parsed.redacted()}: use -1 (no limit) or >= 1")
        return cls(
            connect=ConnectOptions.from_url(parsed, credentials or Credentials()),
            ack_wait=parsed.duration("ack_wait", 30.0),
            max_deliver=max_deliver,
            max_ack_pending=parsed.integer("max_ack_pending", 1000, minimum=1),
            dead_letter=parsed.text("dead_letter", "") or None,
            max_age=parsed.duration("max_age", 7 * 86400.0),
            replicas=parsed.integer("replicas", 1, minimum=1),
            storage=StorageType(storage),
            publish_timeout=parsed.duration("publish_timeout", 5.0),
            publish_retries=parsed.integer("publish_retries", 5, minimum=0),
            dedupe=parsed.boolean("dedupe", True),
        )


async def ensure_stream(js: JetStreamContext, topic: str, options: JetStreamOptions) -> str:
    """Create the stream of ``topic`` if it is missing (or add the subject to it); its name.

    Raises:
        BusError: JetStream refused (not enabled, a conflicting stream, no permission).
    """
    name = stream_name(topic)
    try:
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=name, subjects=[topic], retention=RetentionPolicy.LIMITS,
                max_age=options.max_age, num_replicas=options.replicas, storage=options.storage,
            )
            try:
                await js.add_stream(config)
                logger.info("jetstream: created stream %s for %r", name, topic)
                return name
            except nats.js.errors.BadRequestError:
                info = await js.stream_info(name)  # another process created it first
        subjects = list(info.config.subjects or [])
        if topic not in subjects:
            # two topics that differ only in punctuation share a stream
            await js.update_stream(info.config.evolve(subjects=[*subjects, topic]))
    except nats.errors.NoRespondersError as err:
        raise BusError(f"JetStream is not enabled on {options.connect.shown}; start nats-server with -js") from err
    except (TimeoutError, nats.errors.Error) as err:
        raise BusError(f"cannot set up the stream {name} for {topic!r} on {options.connect.shown}: {err or type(err).__name__}") from err
    return name


def dead_letter_record(body: bytes, reason: str, topic: str, attempts: int) -> bytes:
    """DESIGN.md's dead-letter envelope (shared with the Launcher's invalid messages)."""
    return dead_letter_envelope(body, reason, topic, attempts)
