"""The NSQ consumer: one subscribed connection per nsqd, RDY shares, FIN after ack, backoff.

nsqd's RDY is a ceiling on a connection's in-flight messages (nsqd sends while in-flight <
RDY), so the consumer spreads its budget (``max_in_flight``, by default the Launcher's
``max_in_progress``) over its connections as RDY and leaves it: nsqd then sends exactly as
many messages as the Launcher has free slots, with no RDY traffic per message. Shares are
redistributed when connections come and go; with more connections than budget, the slots
rotate. A message is FIN'd only when the Launcher acks it, REQ'd on ``nack``, TOUCH'd on
``in_progress``. Repeated nacks back off: RDY 0 for an interval that doubles per failure
(``backoff`` .. ``max_backoff``), then RDY 1 probes until successes bring the level to 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from task.bus import nsq_protocol as proto
from task.bus.base import BusInfo, BusPart
from task.bus.nsq_connection import NsqConnection
from task.bus.waiters import Waiters
from task.credentials import Credentials
from task.errors import BusClosedError, BusError

if TYPE_CHECKING:
    from task.bus.nsq import NsqOptions

__all__ = ["NsqConsumer", "NsqMessage"]

logger = logging.getLogger(__name__)

#: First wait before reconnecting to an nsqd that went away; doubles up to lookup_interval.
RECONNECT_MIN = 1.0
#: How often RDY moves between connections when there are more connections than budget.
RDY_ROTATE = 5.0


class _Link:
    """A consumer's subscribed connection and what it holds."""

    __slots__ = ("closing", "conn", "handed", "in_flight", "rdy")

    def __init__(self, conn: NsqConnection) -> None:
        self.conn = conn
        self.rdy = 0  #: the RDY last sent
        self.in_flight = 0  #: messages received on it and not yet FIN'd or REQ'd
        self.closing = False
        #: messages msg() handed out and nobody settled yet, by id
        self.handed: dict[bytes, NsqMessage] = {}


class NsqMessage:
    """One delivery from nsqd; settle it with ``ack`` (FIN) or ``nack`` (REQ)."""

    __slots__ = ("_consumer", "_link", "_settled", "attempt", "body", "id", "timestamp")

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
        self._link.handed.pop(self.id, None)
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
        self._waiters = Waiters()  # msg() calls waiting, oldest first: one per runner
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
            raise BusError(
                f"cannot subscribe to {self.topic}/{self.channel} on any nsqd: {'; '.join(errors)}"
            )
        self._discovery = asyncio.create_task(
            self._discover_loop(failed=bool(errors)), name="nsq-discovery"
        )

    async def _connect_all(self, addresses: Sequence[tuple[str, int]]) -> list[str]:
        missing = [a for a in addresses if f"{a[0]}:{a[1]}" not in self._links]
        results = await asyncio.gather(
            *(self._subscribe(h, p) for h, p in missing), return_exceptions=True
        )
        # RDY once every new link is in, so a first link does not get the whole budget only to
        # have it cut a moment later (nsqd may then briefly hold more than prefetch in flight)
        self._update_rdy()
        errors = [str(r) for r in results if isinstance(r, BaseException)]
        for error in errors:
            logger.warning("NSQ consumer %s/%s: %s", self.topic, self.channel, error)
        return errors

    async def _subscribe(self, host: str, port: int) -> None:
        conn = NsqConnection(
            host, port, self._settings, on_message=self._on_message, on_close=self._on_close
        )
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
        logger.info(
            "NSQ consumer %s/%s subscribed on nsqd %s", self.topic, self.channel, conn.address
        )

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
                if len(self._links) > self.max_in_flight:
                    self._rotation += 1  # let idle connections have a turn at the slots
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
        Idempotent; a later call (the Launcher's last, once it gave up on its tasks) gives
        back (REQ 0) messages handed out and never settled, and waits for every close.
        """
        if self._stopping:
            for link in list(self._links.values()):
                for message in list(link.handed.values()):
                    try:
                        message._settle(proto.req(message.id, 0), ok=False)
                    except BusError:
                        pass  # connection gone: nsqd has the message back already
        else:
            self._stopping = True
            self._waiters.wake_all()
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
                message = self._ready.popleft()
                message._link.handed[message.id] = message
                if self._ready:
                    self._waiters.wake_one()  # pass the baton on
                return message
            await self._waiters.wait(lambda: bool(self._ready))
        return None

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
        self._waiters.wake_one()

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
            logger.warning(
                "NSQ consumer %s/%s lost nsqd %s", self.topic, self.channel, conn.address
            )
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
        seconds = min(
            self.options.max_backoff, self.options.backoff * 2 ** (self._backoff_level - 1)
        )
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

    @property
    def started(self) -> bool:
        """``start()`` ran (stays True after ``stop()``)."""
        return self._started

    def health(self) -> str | None:
        """Why messages cannot arrive now (no nsqd connected), or None."""
        if not self._started or self._stopping or self._links:
            return None
        return f"no nsqd connected for {self.topic}/{self.channel}; reconnecting"
