"""The NSQ producer: PUB/MPUB/DPUB on one nsqd at a time, OK awaited, failover on failure.

Given nsqlookupd addresses it publishes to the nodes lookupd knows and first creates the
topic on all of them (nsqd's HTTP ``/topic/create``), as the Go toolkit does, so consumers
that discover through lookupd see every node.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from task.bus import nsq_lookup as lookupd
from task.bus import nsq_protocol as proto
from task.bus.base import BusInfo, BusPart
from task.bus.delaying import NativeDelayUnavailable
from task.bus.nsq_connection import NsqConnection
from task.credentials import Credentials
from task.duration import format_duration
from task.errors import BusClosedError, BusError

if TYPE_CHECKING:
    from task.bus.nsq import NsqOptions

__all__ = ["NsqProducer"]

logger = logging.getLogger(__name__)

#: Longest delay sent as DPUB, in seconds: nsqd's default ``--max-req-timeout``.
MAX_DPUB_DELAY = 3600.0


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
        self._delayed = 0
        #: what ``send_at`` counts delays from (tests fix it to check the wire bytes)
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

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
        results = await asyncio.gather(
            *(lookupd.create_topic(n, topic) for n in seen.values()), return_exceptions=True
        )
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

    async def send_at(self, topic: str, body: bytes, at: datetime) -> None:
        """DPUB ``body`` so nsqd delivers it to ``topic`` no sooner than ``at``.

        The delay is counted from now and rounded up to the millisecond, never down. nsqd
        holds a deferred message in memory (saved on a clean shutdown, lost if it crashes)
        and refuses delays over its ``--max-req-timeout`` (1h by default): longer ones are
        not sent here, so the caller holds them in the ledger.

        Raises:
            NativeDelayUnavailable: the delay is over ``MAX_DPUB_DELAY`` or nsqd refused it
                as out of range; nothing was sent.
            BusError, BusClosedError, ConfigError: as ``send``.
        """
        delay = math.ceil(max(0.0, (at - self.clock()).total_seconds()) * 1000) / 1000
        if delay > MAX_DPUB_DELAY:
            raise NativeDelayUnavailable(
                f"nsqd defers a message at most {format_duration(MAX_DPUB_DELAY)} "
                f"(--max-req-timeout), not {format_duration(delay)}")
        try:
            await self._publish(topic, proto.dpub(topic, delay, body), 1)
        except proto.NsqServerError as err:
            if err.code == "E_INVALID" and "timeout" in str(err).lower():
                raise NativeDelayUnavailable(f"nsqd refused a delay of {format_duration(delay)}: {err}") from err
            raise
        self._delayed += 1

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
            "delayed": self._delayed,
        }
