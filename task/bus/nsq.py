"""The NSQ bus: ``nsq://h:p[,h:p]`` (nsqd TCP addresses) or ``nsqlookup://h:p[,h:p]``
(nsqlookupd HTTP addresses, polled for the nsqd nodes that have the topic).

Consumer: one connection per nsqd, subscribed to ``topic``/``channel``. nsqd's RDY is a
ceiling on a connection's in-flight messages, so the consumer spreads ``prefetch`` over its
connections as RDY and nsqd then sends exactly as many messages as the Launcher has free
slots; when connections come and go the shares are redistributed. A message is FIN'd only
when the Launcher acks it (after its done task is published), REQ'd on ``nack``, TOUCH'd on
``in_progress``; ``attempt`` is nsqd's attempts count. Repeated nacks back off: RDY 0 for an
interval that doubles per failure (``backoff`` .. ``max_backoff``), then RDY 1 probes until
successes bring the level back to 0. ``stop()`` sends CLS, REQs every message not handed
out yet, and closes each connection once the messages handed out on it are settled, so
nothing waits for nsqd's message timeout.

Producer: PUB/MPUB/DPUB on one nsqd, waiting for OK, failing over to the next address when
a connection breaks. Given nsqlookupd addresses it publishes to the nodes lookupd knows and
first creates the topic on all of them, as the Go toolkit does, so consumers that discover
through lookupd see every node.

Options (URL query): ``max_in_flight`` (default: the consumer's prefetch),
``lookup_interval`` (60s), ``msg_timeout`` (nsqd's default, 60s), ``heartbeat_interval``
(30s; 0 off), ``tls`` (0), ``tls_verify`` (1), ``requeue_delay`` (delay of a ``nack()``
without one, 0s), ``backoff`` (1s; 0 off), ``max_backoff`` (2m), ``connect_timeout`` (10s),
``client_id`` (the host name). The AUTH secret is the ``token`` (else ``password``)
credential; TLS files are ``tls_ca``, ``tls_cert``, ``tls_key``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import task
from task.bus import nsq_lookup as lookupd
from task.bus import nsq_protocol as proto
from task.bus.base import BusInfo, BusPart
from task.bus.nsq_connection import ConnectionSettings, NsqConnection
from task.bus.registry import Credentials
from task.bus.url import parse_url
from task.errors import BusClosedError, BusError, ConfigError

__all__ = ["NsqOptions", "NsqConsumer", "NsqMessage", "NsqProducer", "open_consumer", "open_producer"]

logger = logging.getLogger(__name__)

_OPTIONS = (
    "max_in_flight", "lookup_interval", "msg_timeout", "heartbeat_interval", "tls", "tls_verify",
    "requeue_delay", "backoff", "max_backoff", "connect_timeout", "client_id",
)
#: First wait before reconnecting to an nsqd that went away; doubles up to lookup_interval.
RECONNECT_MIN = 1.0
#: How often RDY moves between connections when there are more connections than prefetch.
RDY_ROTATE = 5.0


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
            raise ConfigError(f"{url!r} is not an NSQ URL; use nsq://host:4150 or nsqlookup://host:4161")
        parsed = parse_url(url, 4150 if scheme == "nsq" else 4161)
        parsed.check_options(_OPTIONS)
        if not parsed.hosts:
            raise ConfigError(f"{url!r} names no host; use e.g. {scheme}://127.0.0.1:{4150 if scheme == 'nsq' else 4161}")
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
            *(lookupd.lookup(h, p, topic) if topic else lookupd.nodes(h, p) for h, p in self.lookupd),
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


class _Link:
    """A consumer's subscribed connection and what it holds."""

    __slots__ = ("conn", "rdy", "in_flight", "closing")

    def __init__(self, conn: NsqConnection) -> None:
        self.conn = conn
        self.rdy = 0  #: the RDY last sent
        self.in_flight = 0  #: messages received on it and not yet FIN'd or REQ'd
        self.closing = False


class NsqMessage:
    """One delivery from nsqd; settle it with ``ack`` (FIN) or ``nack`` (REQ)."""

    __slots__ = ("body", "attempt", "id", "timestamp", "_link", "_consumer", "_settled")

    def __init__(self, consumer: NsqConsumer, link: _Link, frame: proto.MessageFrame) -> None:
        self.body = frame.body
        self.attempt = frame.attempts
        self.id = frame.id
        self.timestamp = frame.timestamp
        self._link = link
        self._consumer = consumer
        self._settled = False

    async def ack(self) -> None:
        """FIN: nsqd forgets the message. Idempotent.

        Raises:
            BusError: its connection is gone; nsqd redelivers it after its message timeout.
        """
        self._settle(proto.fin(self.id), ok=True)

    async def nack(self, delay: float = 0) -> None:
        """REQ: nsqd delivers it again after ``delay`` seconds (``requeue_delay`` if 0).

        Raises:
            BusError: its connection is gone; nsqd redelivers it after its message timeout.
        """
        delay = delay if delay > 0 else self._consumer.options.requeue_delay
        self._settle(proto.req(self.id, delay), ok=False)

    async def in_progress(self) -> None:
        """TOUCH: restart the message's timeout while a long task runs.

        Raises:
            BusError: its connection is gone.
        """
        if not self._settled:
            self._link.conn.send(proto.touch(self.id))

    def _settle(self, command: bytes, *, ok: bool) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            self._link.conn.send(command)
        finally:
            self._consumer._settled(self._link, ok=ok, handed=True)


class NsqConsumer(BusPart):
    """Consumes ``topic`` on ``channel`` from every nsqd given or discovered."""

    def __init__(
        self,
        options: NsqOptions,
        topic: str,
        channel: str = "",
        prefetch: int = 1,
        credentials: Credentials | None = None,
    ) -> None:
        self.options = options
        self.topic = proto.check_name(topic, "topic")
        self.channel = proto.check_name(channel or topic, "channel")
        self.max_in_flight = options.max_in_flight or max(1, prefetch)
        self._settings = options.settings(credentials or Credentials())
        self._links: dict[str, _Link] = {}
        self._ready: deque[NsqMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_discovery = asyncio.Event()
        self._discovery: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._started = False
        self._stopping = False
        self._rotation = 0
        self._backoff_level = 0
        self._backoff_timer: asyncio.TimerHandle | None = None
        self._counts = {"received": 0, "finished": 0, "requeued": 0}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the nsqd nodes and subscribe. Idempotent.

        Raises:
            BusError: no nsqd given could be reached, or no nsqlookupd answered.
            BusClosedError: called after ``stop()``.
        """
        if self._stopping:
            raise BusClosedError("NSQ consumer started after stop()")
        if self._started:
            return
        self._started = True
        addresses = await self.options.discover(self.topic)
        errors = await self._connect_all(addresses)
        if self.options.nsqd and not self._links:
            await self.stop()
            raise BusError(f"cannot subscribe to {self.topic}/{self.channel} on any nsqd: {'; '.join(errors)}")
        self._discovery = asyncio.create_task(self._discover_loop(failed=bool(errors)), name="nsq-discovery")

    async def _connect_all(self, addresses: Sequence[tuple[str, int]]) -> list[str]:
        missing = [a for a in addresses if f"{a[0]}:{a[1]}" not in self._links]
        results = await asyncio.gather(*(self._subscribe(h, p) for h, p in missing), return_exceptions=True)
        # RDY once every new link is in, so a first link does not get the whole budget only to
        # have it cut a moment later (nsqd may then briefly hold more than prefetch in flight)
        self._update_rdy()
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        for error in errors:
            logger.warning("NSQ consumer %s/%s: %s", self.topic, self.channel, error)
        return errors

    async def _subscribe(self, host: str, port: int) -> None:
        conn = NsqConnection(host, port, self._settings, on_message=self._on_message, on_close=self._on_close)
        await conn.connect()
        try:
            await conn.request(proto.sub(self.topic, self.channel))
        except BusError:
            await conn.close()
            raise
        if self._stopping:
            await conn.close()
            return
        self._links[conn.address] = _Link(conn)
        logger.info("NSQ consumer %s/%s subscribed on nsqd %s", self.topic, self.channel, conn.address)

    async def _discover_loop(self, failed: bool) -> None:
        """Reconnect lost nsqd nodes and, with lookupd, find new ones."""
        interval = self.options.lookup_interval
        delay = RECONNECT_MIN
        while not self._stopping:
            wait = min(delay, interval) if failed else interval
            if len(self._links) > self.max_in_flight:
                wait = min(wait, RDY_ROTATE)
            try:
                await asyncio.wait_for(self._wake_discovery.wait(), wait)
                await asyncio.sleep(RECONNECT_MIN)  # a lost node: give it a moment
            except TimeoutError:
                self._rotation += 1
                self._update_rdy()
            self._wake_discovery.clear()
            try:
                failed = bool(await self._connect_all(await self.options.discover(self.topic)))
            except BusError as err:
                logger.warning("NSQ consumer %s/%s: %s", self.topic, self.channel, err)
                failed = True
            delay = min(delay * 2, interval) if failed else RECONNECT_MIN

    async def stop(self) -> None:
        """CLS every connection, REQ what was not handed out, close drained connections.

        A connection that still has messages handed out stays open (in CLOSE_WAIT) until the
        Launcher settles them, so tasks finishing during shutdown are FIN'd, not redelivered.
        Idempotent; a later call also waits for connections closed since.
        """
        if not self._stopping:
            self._stopping = True
            self._wake(None)
            if self._backoff_timer is not None:
                self._backoff_timer.cancel()
            if self._discovery is not None:
                self._discovery.cancel()
                await asyncio.gather(self._discovery, return_exceptions=True)
            await asyncio.gather(*(self._close_link(link) for link in list(self._links.values())))
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def _close_link(self, link: _Link) -> None:
        link.closing = True
        try:
            async with asyncio.timeout(self.options.connect_timeout):
                await link.conn.request(proto.cls())
        except (BusError, TimeoutError) as err:
            logger.warning("nsqd %s did not confirm CLS: %s", link.conn.address, err)
        for message in [m for m in self._ready if m._link is link]:
            self._ready.remove(message)
            message._settled = True
            self._requeue_now(link, message.id)
        if link.in_flight <= 0:
            await link.conn.close()

    def _requeue_now(self, link: _Link, message_id: bytes) -> None:
        """Give back a message that was never handed out (stopping)."""
        try:
            link.conn.send(proto.req(message_id, 0))
        except BusError:
            pass  # the connection is gone, so nsqd has it back already
        self._settled(link, ok=False, handed=False)

    # -- messages --------------------------------------------------------------------------

    async def msg(self) -> NsqMessage | None:
        """The next message; None once stopped.

        Raises:
            BusError: the first connection attempt failed (see ``start``).
        """
        if not self._started and not self._stopping:
            await self.start()
        while not self._stopping:
            if self._ready:
                return self._ready.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None

    def _wake(self, _: object) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_message(self, conn: NsqConnection, frame: proto.MessageFrame) -> None:
        link = self._links.get(conn.address)
        if link is None or link.conn is not conn:
            return  # a stray from a connection we dropped; nsqd times it out
        link.in_flight += 1
        self._counts["received"] += 1
        message = NsqMessage(self, link, frame)
        if self._stopping:
            self._requeue_now(link, frame.id)
            return
        self._ready.append(message)
        self._wake(None)

    def _settled(self, link: _Link, *, ok: bool, handed: bool) -> None:
        link.in_flight -= 1
        self._counts["finished" if ok else "requeued"] += 1
        if link.closing or self._stopping:
            if link.closing and link.in_flight <= 0 and not link.conn.closed:
                closing = asyncio.get_running_loop().create_task(link.conn.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            return
        if handed and self.options.backoff > 0:
            self._backoff(ok)

    def _on_close(self, conn: NsqConnection) -> None:
        link = self._links.get(conn.address)
        if link is None or link.conn is not conn:
            return
        del self._links[conn.address]
        # what it delivered but we did not hand out cannot be FIN'd any more: nsqd redelivers it
        stale = [m for m in self._ready if m._link is link]
        for message in stale:
            self._ready.remove(message)
        if not self._stopping:
            logger.warning("NSQ consumer %s/%s lost nsqd %s", self.topic, self.channel, conn.address)
            self._wake_discovery.set()
            self._update_rdy()

    # -- RDY and backoff -------------------------------------------------------------------

    def _update_rdy(self) -> None:
        """Send each connection its RDY share: the budget spread, or 0/1 while backing off."""
        links = [link for link in self._links.values() if not link.closing and not link.conn.closed]
        if not links or self._stopping:
            return
        budget = self.max_in_flight
        start = self._rotation % len(links)
        order = links[start:] + links[:start]
        targets = dict.fromkeys(map(id, links), 0)
        if self._backoff_level:
            if self._backoff_timer is None:
                targets[id(order[0])] = 1  # the probe
        elif budget >= len(links):
            base, extra = divmod(budget, len(links))
            for i, link in enumerate(order):
                targets[id(link)] = base + (1 if i < extra else 0)
        else:
            # busy connections keep their slot; the rest of the budget rotates over the others
            busy = [link for link in order if link.in_flight > 0][:budget]
            rest = [link for link in order if link not in busy][: budget - len(busy)]
            for link in busy + rest:
                targets[id(link)] = 1
        for link in links:
            count = min(targets[id(link)], link.conn.max_rdy_count)
            if count != link.rdy:
                link.rdy = count
                link.conn.send(proto.rdy(count))

    def _backoff(self, ok: bool) -> None:
        if ok:
            if self._backoff_level == 0:
                return
            self._backoff_level -= 1
            if self._backoff_timer is None:
                self._update_rdy()  # full RDY at level 0, the next probe otherwise
            return
        self._backoff_level += 1
        seconds = min(self.options.max_backoff, self.options.backoff * 2 ** (self._backoff_level - 1))
        if seconds >= self.options.max_backoff:
            self._backoff_level -= 1  # do not grow past the cap
        if self._backoff_timer is not None:
            self._backoff_timer.cancel()
        logger.info("NSQ consumer %s/%s backs off for %.1fs", self.topic, self.channel, seconds)
        self._backoff_timer = asyncio.get_running_loop().call_later(seconds, self._backoff_over)
        self._update_rdy()

    def _backoff_over(self) -> None:
        self._backoff_timer = None
        self._update_rdy()

    def info(self) -> BusInfo:
        return {
            "bus": "nsq",
            "topic": self.topic,
            "channel": self.channel,
            "nsqd": sorted(self._links),
            "max_in_flight": self.max_in_flight,
            "in_flight": sum(link.in_flight for link in self._links.values()),
            "backoff_level": self._backoff_level,
            **self._counts,
        }


class NsqProducer(BusPart):
    """Publishes to one nsqd at a time, failing over to the next address on failure."""

    def __init__(self, options: NsqOptions, credentials: Credentials | None = None) -> None:
        self.options = options
        self._settings = options.settings(credentials or Credentials())
        self._conn: NsqConnection | None = None
        self._connecting = asyncio.Lock()
        self._next = itertools.count()
        self._topics: set[str] = set()
        self._stopped = False
        self._sent = 0
        self._failovers = 0

    async def start(self) -> None:
        """Connect to the first nsqd that answers. Idempotent.

        Raises:
            BusError: no nsqd could be reached.
            BusClosedError: called after ``stop()``.
        """
        await self._connection()

    async def _connection(self) -> NsqConnection:
        if self._stopped:
            raise BusClosedError("NSQ producer used after stop()")
        async with self._connecting:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            addresses = await self.options.discover(None)
            if not addresses:
                raise BusError(f"nsqlookupd {self.options.lookupd} knows no nsqd to publish to")
            errors = []
            for _ in addresses:
                host, port = addresses[next(self._next) % len(addresses)]
                conn = NsqConnection(host, port, self._settings)
                try:
                    await conn.connect()
                except BusError as err:
                    errors.append(str(err))
                    continue
                self._conn = conn
                return conn
            raise BusError(f"cannot publish: no nsqd reachable: {'; '.join(errors)}")

    async def _create_topic(self, topic: str) -> None:
        """With lookupd: create ``topic`` on every nsqd it knows, once per topic."""
        if not self.options.lookupd or topic in self._topics:
            return
        seen: dict[tuple[str, int], lookupd.Node] = {}
        for host, port in self.options.lookupd:
            try:
                seen.update((node.tcp, node) for node in await lookupd.nodes(host, port))
            except BusError as err:
                logger.warning("cannot list nsqd nodes for topic creation: %s", err)
        results = await asyncio.gather(*(lookupd.create_topic(n, topic) for n in seen.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                logger.warning("cannot create NSQ topic %s: %s", topic, result)
        self._topics.add(topic)

    async def _publish(self, topic: str, command: bytes, count: int) -> None:
        await self._create_topic(topic)
        last: BusError | None = None
        for attempt in range(max(2, len(self.options.nsqd or self.options.lookupd) + 1)):
            conn = await self._connection()
            try:
                await conn.request(command)
            except proto.NsqServerError as err:
                if err.code in ("E_BAD_TOPIC", "E_BAD_MESSAGE", "E_BAD_BODY", "E_INVALID"):
                    raise  # ours to fix: another nsqd would say the same
                last = err
            except BusError as err:
                last = err
            else:
                self._sent += count
                return
            logger.warning("publishing to nsqd %s failed (%s); failing over", conn.address, last)
            self._failovers += 1
            await conn.close()
        raise BusError(f"cannot publish to NSQ topic {topic}: {last}") from last

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """PUB ``body`` to ``topic`` and wait for nsqd's OK; ``key`` is ignored.

        Raises:
            BusError: every nsqd tried refused or failed.
            BusClosedError: called after ``stop()``.
            ConfigError: ``topic`` is not a valid NSQ topic name.
        """
        await self._publish(topic, proto.pub(topic, body), 1)

    async def send_many(self, topic: str, bodies: Sequence[bytes]) -> None:
        """MPUB ``bodies`` to ``topic`` in one command; all are accepted or none.

        Raises:
            BusError, BusClosedError, ConfigError: as ``send``.
        """
        if bodies:
            await self._publish(topic, proto.mpub(topic, bodies), len(bodies))

    async def send_later(self, topic: str, body: bytes, delay: float) -> None:
        """DPUB: nsqd delivers ``body`` no sooner than ``delay`` seconds from now.

        Raises:
            BusError, BusClosedError, ConfigError: as ``send``.
        """
        await self._publish(topic, proto.dpub(topic, delay, body), 1)

    async def stop(self) -> None:
        """Close the connection; sends in progress have their answer or fail. Idempotent."""
        self._stopped = True
        if self._conn is not None:
            await self._conn.close()

    def info(self) -> BusInfo:
        return {
            "bus": "nsq",
            "nsqd": self._conn.address if self._conn is not None else None,
            "sent": self._sent,
            "failovers": self._failovers,
        }


def open_consumer(url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials) -> NsqConsumer:
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
