"""The NSQ bus: ``nsq://h:p[,h:p]`` (nsqd TCP addresses) or ``nsqlookup://h:p[,h:p]``
(nsqlookupd HTTP addresses, polled for the nsqd nodes that have the topic).

The consumer (``task.bus.nsq_consumer``) keeps RDY equal to the Launcher's free slots, FINs
only after the done task is published, REQs on nack, TOUCHes long tasks, backs off on
repeated failures and closes with CLS. The producer (``task.bus.nsq_producer``) PUBs with
failover and waits for nsqd's OK.

Options (URL query): ``max_in_flight`` (default: the consumer's prefetch),
``lookup_interval`` (60s), ``msg_timeout`` (nsqd's default, 60s), ``heartbeat_interval``
(30s; 0 off), ``tls`` (0), ``tls_verify`` (1), ``requeue_delay`` (delay of a ``nack()``
without one, 0s), ``backoff`` (1s; 0 off), ``max_backoff`` (2m), ``connect_timeout`` (10s),
``client_id`` (the host name). The AUTH secret is the ``token`` (else ``password``)
credential; TLS files are ``tls_ca``, ``tls_cert``, ``tls_key``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

import task
from task.bus import nsq_lookup as lookupd
from task.bus.nsq_connection import ConnectionSettings
from task.bus.nsq_consumer import NsqConsumer, NsqMessage
from task.bus.nsq_producer import NsqProducer
from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.url import parse_url

__all__ = [
    "NsqConsumer",
    "NsqMessage",
    "NsqOptions",
    "NsqProducer",
    "open_consumer",
    "open_producer",
]

logger = logging.getLogger(__name__)

_OPTIONS = (
    "max_in_flight",
    "lookup_interval",
    "msg_timeout",
    "heartbeat_interval",
    "tls",
    "tls_verify",
    "requeue_delay",
    "backoff",
    "max_backoff",
    "connect_timeout",
    "client_id",
)


@dataclass(frozen=True)
class NsqOptions:
    """Where NSQ is and how to talk to it; ``from_url`` parses and checks the URL."""

    nsqd: tuple[tuple[str, int], ...] = ()
    lookupd: tuple[tuple[str, int], ...] = ()
    max_in_flight: int = 0  #: 0: the consumer's prefetch
    lookup_interval: float = 60.0
    msg_timeout: float = 0.0  #: 0: nsqd's default
    heartbeat_interval: float = 30.0
    tls: bool = False
    tls_verify: bool = True
    requeue_delay: float = 0.0
    backoff: float = 1.0
    max_backoff: float = 120.0
    connect_timeout: float = 10.0
    client_id: str = ""

    @classmethod
    def from_url(cls, url: str) -> NsqOptions:
        """Options from an ``nsq://`` or ``nsqlookup://`` URL.

        Raises:
            ConfigError: another scheme, no host, an unknown or malformed option.
        """
        scheme = url.partition(":")[0].lower()
        if scheme not in ("nsq", "nsqlookup"):
            raise ConfigError(
                f"{url!r} is not an NSQ URL; use nsq://host:4150 or nsqlookup://host:4161"
            )
        parsed = parse_url(url, 4150 if scheme == "nsq" else 4161)
        parsed.check_options(_OPTIONS)
        if not parsed.hosts:
            raise ConfigError(
                f"{url!r} names no host; use e.g. {scheme}://127.0.0.1:{4150 if scheme == 'nsq' else 4161}"
            )
        hosts = tuple(parsed.hosts)
        msg_timeout = parsed.duration("msg_timeout", 0.0)
        if msg_timeout and msg_timeout < 1:
            raise ConfigError(f"msg_timeout in {url!r} must be at least 1s (nsqd's minimum)")
        return cls(
            nsqd=hosts if scheme == "nsq" else (),
            lookupd=hosts if scheme == "nsqlookup" else (),
            max_in_flight=parsed.integer("max_in_flight", 0, minimum=0),
            lookup_interval=max(0.1, parsed.duration("lookup_interval", 60.0)),
            msg_timeout=msg_timeout,
            heartbeat_interval=parsed.duration("heartbeat_interval", 30.0),
            tls=parsed.boolean("tls", False),
            tls_verify=parsed.boolean("tls_verify", True),
            requeue_delay=parsed.duration("requeue_delay", 0.0),
            backoff=parsed.duration("backoff", 1.0),
            max_backoff=parsed.duration("max_backoff", 120.0),
            connect_timeout=parsed.duration("connect_timeout", 10.0),
            client_id=parsed.text("client_id", ""),
        )

    def settings(self, credentials: Credentials) -> ConnectionSettings:
        """What each connection sends in IDENTIFY and needs for TLS and AUTH."""
        hostname = socket.gethostname()
        return ConnectionSettings(
            client_id=self.client_id or hostname.split(".")[0],
            hostname=hostname,
            user_agent=f"taskbus/{task.__version__}",
            heartbeat_interval=self.heartbeat_interval,
            msg_timeout=self.msg_timeout,
            connect_timeout=self.connect_timeout,
            tls=self.tls,
            tls_ca=credentials.tls_ca,
            tls_cert=credentials.tls_cert,
            tls_key=credentials.tls_key,
            tls_verify=self.tls_verify,
            auth_secret=credentials.token or credentials.password,
        )

    async def discover(self, topic: str | None) -> list[tuple[str, int]]:
        """nsqd TCP addresses: the given ones, or lookupd's nodes (with ``topic`` if given).

        Raises:
            BusError: every nsqlookupd failed to answer.
        """
        if not self.lookupd:
            return list(self.nsqd)
        answers = await asyncio.gather(
            *(
                lookupd.lookup(h, p, topic) if topic else lookupd.nodes(h, p)
                for h, p in self.lookupd
            ),
            return_exceptions=True,
        )
        found: dict[tuple[str, int], None] = {}
        errors = []
        for answer in answers:
            if isinstance(answer, BaseException):
                errors.append(str(answer))
                continue
            found.update(dict.fromkeys(node.tcp for node in answer))
        if len(errors) == len(answers):
            raise BusError(f"no nsqlookupd answered: {'; '.join(errors)}")
        return list(found)


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> NsqConsumer:
    """``nsq://h:p`` or ``nsqlookup://h:p``: a consumer of ``topic`` on ``channel``.

    Raises:
        ConfigError: a malformed URL or option, or an invalid topic or channel name.
    """
    return NsqConsumer(NsqOptions.from_url(url), topic, channel, prefetch, credentials)


def open_producer(url: str, *, credentials: Credentials) -> NsqProducer:
    """``nsq://h:p[,h:p]`` or ``nsqlookup://h:p``: a producer with failover.

    Raises:
        ConfigError: a malformed URL or option.
    """
    return NsqProducer(NsqOptions.from_url(url), credentials)
