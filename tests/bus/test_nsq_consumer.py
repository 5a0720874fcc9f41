"""The NSQ consumer's and producer's protocol logic against a strict scripted nsqd.

No nsqd can run here, so a peer on a free loopback port plays nsqd from a script: every
``expect`` reads exactly the bytes the spec says the client must send next and fails on
anything else. RDY shares, FIN only on ack, REQ on nack, TOUCH, heartbeats, backoff, CLS on
stop, PUB/MPUB waiting for OK, failover, AUTH, and lookupd discovery are checked here; the
same scenarios against a real nsqd are in test_nsq_integration.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Self

import pytest

from task.bus import nsq_protocol as proto
from task.bus.nsq import NsqConsumer, NsqMessage, NsqProducer, open_consumer, open_producer
from task.credentials import Credentials
from task.errors import BusClosedError, BusError
from tests.servers.ports import free_port
from tests.servers.tls import make_tls_files

#: Seconds a peer waits for bytes the script says must come.
PATIENCE = 5.0


class PeerConn:
    """The nsqd side of one client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), PATIENCE)

    async def expect(self, wire: bytes) -> None:
        """Fail unless the client's next bytes are exactly ``wire``."""
        got = await asyncio.wait_for(self.reader.read(len(wire)), PATIENCE)
        while len(got) < len(wire) and got:
            more = await asyncio.wait_for(self.reader.read(len(wire) - len(got)), PATIENCE)
            if not more:
                break
            got += more
        assert got == wire, f"the client sent {got!r}, the spec wants {wire!r}"

    async def expect_silence(self, seconds: float = 0.3) -> None:
        """Fail if the client sends anything within ``seconds``."""
        try:
            got = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"the client sent {got!r}... where nothing was due")

    async def expect_eof(self) -> None:
        """Fail unless the client closes the connection (and sends nothing more)."""
        assert await asyncio.wait_for(self.reader.read(), PATIENCE) == b""

    async def handshake(self, answer: dict[str, object] | None = None) -> dict[str, object]:
        """Read magic + IDENTIFY, answer with feature negotiation JSON; return the fields."""
        await self.expect(proto.MAGIC_V2 + b"IDENTIFY\n")
        size = int.from_bytes(await self.read(4), "big")
        fields: dict[str, object] = json.loads(await self.read(size))
        assert fields["feature_negotiation"] is True
        self.respond(json.dumps(answer or {"max_rdy_count": 2500, "tls_v1": False}).encode())
        return fields

    async def subscribe(self, topic: str, channel: str) -> None:
        await self.handshake()
        await self.expect(f"SUB {topic} {channel}\n".encode())
        self.respond(proto.OK)

    def respond(self, data: bytes) -> None:
        self.writer.write(proto.encode_frame(proto.FrameType.RESPONSE, data))

    def error(self, text: str) -> None:
        self.writer.write(proto.encode_frame(proto.FrameType.ERROR, text.encode()))

    def message(self, n: int, body: bytes, attempts: int = 1) -> bytes:
        """Deliver a message whose id is ``n`` as 16 digits; return the id."""
        message_id = b"%016d" % n
        self.writer.write(proto.encode_message(proto.MessageFrame(1, attempts, message_id, body)))
        return message_id

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class Peer:
    """A listening scripted nsqd on a free loopback port; ``accept()`` the next client."""

    def __init__(self) -> None:
        self.port = free_port()
        self._conns: asyncio.Queue[PeerConn] = asyncio.Queue()
        self._all: list[PeerConn] = []
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", self.port)
        return self

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = PeerConn(reader, writer)
        self._all.append(conn)
        await self._conns.put(conn)

    async def accept(self) -> PeerConn:
        return await asyncio.wait_for(self._conns.get(), PATIENCE)

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self._all:
            await conn.close()
        await asyncio.wait_for(self._server.wait_closed(), PATIENCE)


class HttpPeer:
    """A one-route-at-a-time HTTP server: ``handler(method, path) -> (status, json)``."""

    def __init__(self, handler: Callable[[str, str], tuple[int, object]]) -> None:
        self.port = free_port()
        self.handler = handler
        self.requests: list[str] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.requests.append(f"{method} {path}")
        status, body = self.handler(method, path)
        data = json.dumps(body).encode()
        writer.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(data), data))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


# -- helpers ---------------------------------------------------------------------------------

QUIET = "heartbeat_interval=0&backoff=0"


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    async with Peer() as running:
        yield running


_made: list[NsqConsumer | NsqProducer] = []


@pytest.fixture(autouse=True)
async def _stop_what_tests_made() -> AsyncIterator[None]:
    """A failing test must not leave a consumer reconnecting forever: stop it regardless."""
    yield
    for part in _made:
        await asyncio.wait_for(part.stop(), 15)
    _made.clear()


def consumer_for(
    *peers: Peer, prefetch: int = 1, query: str = QUIET, **kw: str | None
) -> NsqConsumer:
    hosts = ",".join(p.address for p in peers)
    consumer = open_consumer(
        f"nsq://{hosts}?{query}",
        topic="t",
        channel="c",
        prefetch=prefetch,
        credentials=Credentials(**kw),
    )
    _made.append(consumer)
    return consumer


async def subscribed(consumer: NsqConsumer, *peers: Peer) -> list[PeerConn]:
    """Start ``consumer`` while each peer does the handshake and answers SUB with OK."""
    starting = asyncio.create_task(consumer.start())
    conns = []
    for peer in peers:
        conn = await peer.accept()
        await conn.subscribe("t", "c")
        conns.append(conn)
    await starting
    return conns


async def stopped(consumer: NsqConsumer, *conns: PeerConn) -> None:
    """Stop ``consumer``: each peer expects CLS, answers CLOSE_WAIT, then sees the close."""
    stopping = asyncio.create_task(consumer.stop())
    for conn in conns:
        await conn.expect(b"CLS\n")
        conn.respond(proto.CLOSE_WAIT)
    await stopping
    for conn in conns:
        await conn.expect_eof()


async def next_message(consumer: NsqConsumer) -> NsqMessage:
    message = await asyncio.wait_for(consumer.msg(), PATIENCE)
    assert message is not None
    return message


# -- consumer --------------------------------------------------------------------------------


async def test_identify_sub_and_rdy_equal_to_prefetch(peer: Peer) -> None:
    consumer = consumer_for(
        peer, prefetch=3, query="heartbeat_interval=5s&msg_timeout=90s&client_id=w7"
    )
    starting = asyncio.create_task(consumer.start())
    conn = await peer.accept()
    fields = await conn.handshake()
    assert (fields["client_id"], fields["heartbeat_interval"], fields["msg_timeout"]) == (
        "w7",
        5000,
        90000,
    )
    assert str(fields["user_agent"]).startswith("taskbus/") and fields["tls_v1"] is False
    await conn.expect(b"SUB t c\n")
    conn.respond(proto.OK)
    await starting
    await conn.expect(b"RDY 3\n")
    await stopped(consumer, conn)


async def test_fin_only_on_ack_req_on_nack_touch_on_in_progress(peer: Peer) -> None:
    consumer = consumer_for(peer, prefetch=2)
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 2\n")
    first = conn.message(1, b'{"type":"a"}', attempts=3)
    second = conn.message(2, b'{"type":"b"}')
    one, two = await next_message(consumer), await next_message(consumer)
    assert (one.body, one.attempt, two.attempt) == (b'{"type":"a"}', 3, 1)
    await one.in_progress()
    await conn.expect(b"TOUCH " + first + b"\n")
    await conn.expect_silence()  # handing out is not acknowledging
    await one.ack()
    await one.ack()  # idempotent: one FIN
    await conn.expect(b"FIN " + first + b"\n")
    await two.nack(2.5)
    await conn.expect(b"REQ " + second + b" 2500\n")
    await conn.expect_silence()  # RDY is a ceiling on in-flight messages: nothing to resend
    assert consumer.info()["in_flight"] == 0
    await stopped(consumer, conn)


async def test_nack_without_delay_uses_requeue_delay(peer: Peer) -> None:
    consumer = consumer_for(peer, query=QUIET + "&requeue_delay=3s")
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 1\n")
    message_id = conn.message(1, b"x")
    await (await next_message(consumer)).nack()
    await conn.expect(b"REQ " + message_id + b" 3000\n")
    await stopped(consumer, conn)


async def test_heartbeat_is_answered_with_nop_and_non_fatal_errors_keep_the_connection(
    peer: Peer,
) -> None:
    consumer = consumer_for(peer, query="heartbeat_interval=2s&backoff=0")
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 1\n")
    conn.respond(proto.HEARTBEAT)
    await conn.expect(b"NOP\n")
    conn.error("E_FIN_FAILED FIN 0000000000000009 failed ID not in flight")
    message_id = conn.message(1, b"still here")
    message = await next_message(consumer)
    assert message.body == b"still here"
    await message.ack()
    await conn.expect(b"FIN " + message_id + b"\n")
    await stopped(consumer, conn)


async def test_rdy_is_spread_over_connections_and_redistributed_when_one_goes() -> None:
    async with Peer() as a, Peer() as b:
        consumer = consumer_for(a, b, prefetch=3)
        starting = asyncio.create_task(consumer.start())
        conn_a, conn_b = await a.accept(), await b.accept()
        await asyncio.gather(conn_a.subscribe("t", "c"), conn_b.subscribe("t", "c"))
        await starting
        first = await asyncio.wait_for(conn_a.reader.readline(), PATIENCE)
        second = await asyncio.wait_for(conn_b.reader.readline(), PATIENCE)
        assert sorted([first, second]) == [b"RDY 1\n", b"RDY 2\n"]  # 3 spread, each told once
        await conn_b.close()  # nsqd b goes away: a gets the whole budget
        await conn_a.expect(b"RDY 3\n")
        assert consumer.info()["nsqd"] == [a.address]
        await stopped(consumer, conn_a)


async def test_repeated_nacks_back_off_then_probe_with_rdy_1(peer: Peer) -> None:
    consumer = consumer_for(
        peer, prefetch=4, query="heartbeat_interval=0&backoff=0.2s&max_backoff=1s"
    )
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 4\n")
    failing = conn.message(1, b"x")
    await (await next_message(consumer)).nack(0)
    # Then: RDY 0 at once, nothing during the backoff, RDY 1 to probe after it
    await conn.expect(b"REQ " + failing + b" 0\nRDY 0\n")
    await conn.expect_silence(0.1)
    await conn.expect(b"RDY 1\n")
    assert consumer.info()["backoff_level"] == 1
    # When the probe succeeds, the full RDY comes back
    probe = conn.message(2, b"x", attempts=2)
    await (await next_message(consumer)).ack()
    await conn.expect(b"FIN " + probe + b"\nRDY 4\n")
    await stopped(consumer, conn)


async def test_stop_sends_cls_requeues_unhanded_and_fins_late_acks(peer: Peer) -> None:
    consumer = consumer_for(peer, prefetch=2)
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 2\n")
    handed_id = conn.message(1, b"running")
    held_id = conn.message(2, b"prefetched")
    handed = await next_message(consumer)
    await asyncio.sleep(0.05)  # the second message is in the consumer's hands, not handed out
    stopping = asyncio.create_task(consumer.stop())
    await conn.expect(b"CLS\n")
    conn.respond(proto.CLOSE_WAIT)
    await conn.expect(b"REQ " + held_id + b" 0\n")
    await stopping
    assert await asyncio.wait_for(consumer.msg(), PATIENCE) is None
    # the connection stays open for the running task, which finishes and is FIN'd
    await conn.expect_silence()
    await handed.ack()
    await conn.expect(b"FIN " + handed_id + b"\n")
    await conn.expect_eof()
    await consumer.stop()


async def test_a_later_stop_gives_back_messages_never_settled(peer: Peer) -> None:
    consumer = consumer_for(peer)
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 1\n")
    stuck_id = conn.message(1, b"stuck")
    stuck = await next_message(consumer)
    stopping = asyncio.create_task(consumer.stop())
    await conn.expect(b"CLS\n")
    conn.respond(proto.CLOSE_WAIT)
    await stopping
    await conn.expect_silence()  # the task may still finish and be FIN'd
    # When the Launcher gives up on the task and stops again: REQ 0, then the close
    await consumer.stop()
    await conn.expect(b"REQ " + stuck_id + b" 0\n")
    await conn.expect_eof()
    await stuck.ack()  # too late, and harmless: settled already, nothing is sent


async def test_a_message_arriving_while_stopping_goes_back_at_once(peer: Peer) -> None:
    consumer = consumer_for(peer)
    (conn,) = await subscribed(consumer, peer)
    await conn.expect(b"RDY 1\n")
    stopping = asyncio.create_task(consumer.stop())
    await conn.expect(b"CLS\n")
    late = conn.message(5, b"late")  # sent by nsqd before it read CLS
    await conn.expect(b"REQ " + late + b" 0\n")
    conn.respond(proto.CLOSE_WAIT)
    await stopping
    await conn.expect_eof()


async def test_stop_wakes_a_waiting_msg(peer: Peer) -> None:
    consumer = consumer_for(peer)
    (conn,) = await subscribed(consumer, peer)
    waiting = asyncio.create_task(consumer.msg())
    await conn.expect(b"RDY 1\n")
    await stopped(consumer, conn)
    assert await asyncio.wait_for(waiting, PATIENCE) is None
    with pytest.raises(BusClosedError):
        await consumer.start()


async def test_auth_sends_the_token_when_nsqd_requires_it(peer: Peer) -> None:
    consumer = consumer_for(peer, token="s3cret")
    starting = asyncio.create_task(consumer.start())
    conn = await peer.accept()
    await conn.handshake({"max_rdy_count": 2500, "auth_required": True})
    await conn.expect(b"AUTH\n\x00\x00\x00\x06s3cret")
    conn.respond(b'{"identity":"worker","identity_url":"","permission_count":1}')
    await conn.expect(b"SUB t c\n")
    conn.respond(proto.OK)
    await starting
    await conn.expect(b"RDY 1\n")
    await stopped(consumer, conn)


async def test_auth_required_without_a_secret_says_which_setting(peer: Peer) -> None:
    consumer = consumer_for(peer)
    starting = asyncio.create_task(consumer.start())
    conn = await peer.accept()
    await conn.handshake({"auth_required": True})
    with pytest.raises(BusError, match="requires AUTH; set the token"):
        await starting
    await conn.expect_eof()


async def test_tls_asked_but_not_offered_is_refused(peer: Peer) -> None:
    consumer = consumer_for(peer, query=QUIET + "&tls=1")
    starting = asyncio.create_task(consumer.start())
    conn = await peer.accept()
    fields = await conn.handshake({"tls_v1": False})
    assert fields["tls_v1"] is True
    with pytest.raises(BusError, match="does not offer TLS"):
        await starting


async def test_sub_refused_is_a_bus_error_naming_the_code(peer: Peer) -> None:
    consumer = consumer_for(peer)
    starting = asyncio.create_task(consumer.start())
    conn = await peer.accept()
    await conn.handshake()
    await conn.expect(b"SUB t c\n")
    conn.error("E_BAD_CHANNEL SUB channel name is not valid")
    with pytest.raises(BusError, match="E_BAD_CHANNEL"):
        await starting


async def test_unreachable_nsqd_fails_start_with_a_hint() -> None:
    consumer = open_consumer(
        f"nsq://127.0.0.1:{free_port()}",
        topic="t",
        channel="c",
        prefetch=1,
        credentials=Credentials(),
    )
    with pytest.raises(BusError, match="is nsqd running"):
        await consumer.start()


async def test_lookupd_discovery_connects_to_the_nodes_that_have_the_topic(peer: Peer) -> None:
    def lookupd(method: str, path: str) -> tuple[int, object]:
        assert (method, path) == ("GET", "/lookup?topic=t")
        return 200, {
            "channels": ["c"],
            "producers": [
                {"broadcast_address": "127.0.0.1", "tcp_port": peer.port, "http_port": 1},
            ],
        }

    async with HttpPeer(lookupd) as http:
        consumer = open_consumer(
            f"nsqlookup://127.0.0.1:{http.port}?{QUIET}",
            topic="t",
            channel="c",
            prefetch=1,
            credentials=Credentials(),
        )
        (conn,) = await subscribed(consumer, peer)
        await conn.expect(b"RDY 1\n")
        await stopped(consumer, conn)
        assert http.requests == ["GET /lookup?topic=t"]


# -- producer --------------------------------------------------------------------------------


async def test_send_returns_only_after_ok(peer: Peer) -> None:
    producer = open_producer(
        f"nsq://{peer.address}?heartbeat_interval=0", credentials=Credentials()
    )
    sending = asyncio.create_task(producer.send("done", b"hello"))
    conn = await peer.accept()
    await conn.handshake()
    await conn.expect(b"PUB done\n\x00\x00\x00\x05hello")
    await asyncio.sleep(0.05)
    assert not sending.done(), "send returned before nsqd's OK"
    conn.respond(proto.OK)
    await sending
    batch = asyncio.create_task(producer.send_many("done", [b"a", b"bc"]))
    await conn.expect(
        b"MPUB done\n\x00\x00\x00\x0f\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x02bc"
    )
    conn.respond(proto.OK)
    await batch
    assert producer.info()["sent"] == 3
    await producer.stop()
    await conn.expect_eof()
    with pytest.raises(BusClosedError):
        await producer.send("done", b"x")


async def test_pipelined_sends_pair_with_their_answers(peer: Peer) -> None:
    producer = open_producer(
        f"nsq://{peer.address}?heartbeat_interval=0", credentials=Credentials()
    )
    await asyncio.gather(producer.start(), _handshake_next(peer))
    conn = peer_conns[-1]
    first = asyncio.create_task(producer.send("a", b"1"))
    second = asyncio.create_task(producer.send("b", b"2"))
    await conn.expect(b"PUB a\n\x00\x00\x00\x011PUB b\n\x00\x00\x00\x012")
    conn.respond(proto.OK)
    conn.error("E_BAD_MESSAGE PUB message too big")
    await first
    with pytest.raises(proto.NsqServerError, match="E_BAD_MESSAGE"):
        await second
    await producer.stop()


peer_conns: list[PeerConn] = []


async def _handshake_next(peer: Peer) -> None:
    conn = await peer.accept()
    await conn.handshake()
    peer_conns.append(conn)


async def test_send_fails_over_to_the_next_nsqd() -> None:
    async with Peer() as a, Peer() as b:
        producer = open_producer(
            f"nsq://{a.address},{b.address}?heartbeat_interval=0", credentials=Credentials()
        )
        sending = asyncio.create_task(producer.send("done", b"x"))
        conn_a = await a.accept()
        await conn_a.handshake()
        await conn_a.expect(b"PUB done\n\x00\x00\x00\x01x")
        await conn_a.close()  # nsqd a dies before its OK
        conn_b = await b.accept()
        await conn_b.handshake()
        await conn_b.expect(b"PUB done\n\x00\x00\x00\x01x")
        conn_b.respond(proto.OK)
        await sending
        assert producer.info()["failovers"] == 1 and producer.info()["nsqd"] == b.address
        await producer.stop()


async def test_lookupd_producer_creates_the_topic_on_every_node_first(peer: Peer) -> None:
    def nsq_http(method: str, path: str) -> tuple[int, object]:
        if path == "/nodes":
            return 200, {
                "producers": [
                    {
                        "broadcast_address": "127.0.0.1",
                        "tcp_port": peer.port,
                        "http_port": http.port,
                    },
                ]
            }
        return 200, {}

    async with HttpPeer(nsq_http) as http:
        producer = open_producer(
            f"nsqlookup://127.0.0.1:{http.port}?heartbeat_interval=0", credentials=Credentials()
        )
        sending = asyncio.create_task(producer.send("jobs", b"x"))
        conn = await peer.accept()
        await conn.handshake()
        await conn.expect(b"PUB jobs\n\x00\x00\x00\x01x")
        conn.respond(proto.OK)
        await sending
        assert "POST /topic/create?topic=jobs" in http.requests
        await producer.stop()


async def test_with_more_connections_than_budget_the_slot_rotates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from task.bus import nsq_consumer

    monkeypatch.setattr(nsq_consumer, "RDY_ROTATE", 0.2)
    async with Peer() as a, Peer() as b:
        consumer = consumer_for(a, b, prefetch=1)
        starting = asyncio.create_task(consumer.start())
        conn_a, conn_b = await a.accept(), await b.accept()
        await asyncio.gather(conn_a.subscribe("t", "c"), conn_b.subscribe("t", "c"))
        await starting
        # Given budget 1 over two idle nodes: one holds the slot (RDY 1, the other is told
        # nothing), then after a rotation the holder gets RDY 0 and the other RDY 1
        lines = await asyncio.wait_for(
            asyncio.gather(conn_a.reader.readline(), conn_b.reader.readline()), PATIENCE
        )
        assert lines == [b"RDY 1\n", b"RDY 1\n"]
        monkeypatch.setattr(nsq_consumer, "RDY_ROTATE", 60.0)
        assert consumer.info()["max_in_flight"] == 1
        stopping = asyncio.create_task(consumer.stop())
        for conn in (conn_a, conn_b):  # rotations may have moved the slot more times
            while (line := await asyncio.wait_for(conn.reader.readline(), PATIENCE)) != b"CLS\n":
                assert line in (b"RDY 0\n", b"RDY 1\n")
            conn.respond(proto.CLOSE_WAIT)
        await stopping


# -- raw bench loop --------------------------------------------------------------------------


async def test_raw_bench_loop_publishes_the_done_task_before_fin(peer: Peer) -> None:
    from task.bench.raw.nsq import raw_loop

    running = asyncio.create_task(
        raw_loop(f"nsq://{peer.address}?{QUIET}", n=2, max_in_progress=1, credentials=Credentials())
    )
    publisher = await peer.accept()
    await publisher.handshake()
    subscriber = await peer.accept()
    await subscriber.handshake()
    line = await asyncio.wait_for(publisher.reader.readline(), PATIENCE)
    assert line.startswith(b"MPUB bench_raw_")
    topic = line.split()[1].decode()
    size = int.from_bytes(await publisher.read(4), "big")
    assert (await publisher.read(size))[:4] == b"\x00\x00\x00\x02"
    publisher.respond(proto.OK)
    await subscriber.expect(f"SUB {topic} raw\n".encode())
    subscriber.respond(proto.OK)
    await subscriber.expect(b"RDY 1\n")
    for i in range(2):
        message_id = subscriber.message(i, b'{"type":"bench","info":"%d"}' % i)
        done = (
            b'{"type": "bench", "info": "%d", "result": "complete", "msg": "", "started": "", "ended": ""}'
            % i
        )
        await publisher.expect(
            f"PUB {topic}_done#ephemeral\n".encode() + len(done).to_bytes(4, "big") + done
        )
        await subscriber.expect_silence(0.05)  # no FIN before the done task's OK
        publisher.respond(proto.OK)
        await subscriber.expect(b"FIN " + message_id + b"\n")
    await subscriber.expect(b"CLS\n")
    subscriber.respond(proto.CLOSE_WAIT)
    assert (await asyncio.wait_for(running, PATIENCE)).seconds > 0


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str, str]:
    """A test CA and a server certificate for 127.0.0.1 it signed, with its key."""
    files = make_tls_files(tmp_path)
    return files["ca"], files["server_cert"], files["server_key"]


async def test_tls_upgrade_after_identify_then_everything_runs_over_tls(
    peer: Peer, tls_files: tuple[str, str, str]
) -> None:
    ca, cert, key = tls_files
    consumer = consumer_for(peer, query=QUIET + "&tls=1", tls_ca=ca)
    starting = asyncio.create_task(consumer.start())
    conn = await peer.accept()
    fields = await conn.handshake({"max_rdy_count": 2500, "tls_v1": True})
    assert fields["tls_v1"] is True
    # Then the client starts TLS at once; nsqd's OK and everything after go over TLS
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    await conn.writer.start_tls(server_side)
    conn.respond(proto.OK)
    await conn.expect(b"SUB t c\n")
    conn.respond(proto.OK)
    await starting
    await conn.expect(b"RDY 1\n")
    await stopped(consumer, conn)
