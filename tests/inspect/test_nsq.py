"""The NSQ inspector: nsqd's /stats read into backlog rows.

The parsing runs here against a stand-in HTTP server that answers what nsqd 1.2 answers
(the shape of ``/stats?format=json``); the real nsqd runs only under TASK_TEST_NSQD.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from task.bus.nsq import open_consumer, open_producer
from task.cli import main
from task.credentials import Credentials
from task.errors import BusError
from task.inspect import CannotPeek, open_inspector
from task.task import Task

NSQD = os.environ.get("TASK_TEST_NSQD", "")


def channel(name: str, depth: int, in_flight: int, deferred: int, requeued: int, timed_out: int) -> dict[str, object]:
    return {
        "channel_name": name, "depth": depth, "backend_depth": 0, "in_flight_count": in_flight,
        "deferred_count": deferred, "message_count": 10, "requeue_count": requeued,
        "timeout_count": timed_out, "client_count": 1, "clients": [], "paused": False,
        "e2e_processing_latency": {"count": 0, "percentiles": None},
    }


STATS = {
    "version": "1.2.1", "health": "OK", "start_time": 1700000000,
    "topics": [
        {"topic_name": "nop", "depth": 0, "backend_depth": 0, "message_count": 10, "paused": False,
         "channels": [channel("workers", 3, 2, 1, 2, 1), channel("recap", 0, 0, 0, 0, 0)]},
        {"topic_name": "fresh", "depth": 4, "backend_depth": 0, "message_count": 4, "paused": False,
         "channels": []},
    ],
    "memory": {}, "producers": [],
}


class _StandIn(BaseHTTPRequestHandler):
    """Answers /stats as nsqd does and /nodes as nsqlookupd does (pointing at itself)."""

    def do_GET(self) -> None:  # the name http.server calls
        port = self.server.server_address[1]
        if self.path.startswith("/nodes"):
            doc: object = {"producers": [{"broadcast_address": "127.0.0.1", "tcp_port": port - 1, "http_port": port}]}
        elif self.path.startswith("/stats?format=json"):
            doc = STATS
        else:
            doc = {"message": "NOT_FOUND"}
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def nsqd_http() -> Iterator[int]:
    """The HTTP port of a stand-in nsqd (in a thread, so the CLI's own loop can reach it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_stats_become_rows_per_topic_and_channel(nsqd_http: int) -> None:
    inspector = open_inspector(f"nsq://127.0.0.1:{nsqd_http - 1}")  # HTTP is TCP + 1
    rows = await inspector.topics()
    assert [(r.topic, r.channel, r.waiting, r.in_flight, r.redelivered, r.delayed) for r in rows] == [
        ("fresh", "", 4, 0, 0, 0),
        ("nop", "recap", 0, 0, 0, 0),
        ("nop", "workers", 3, 2, 3, 1),
    ]
    assert (await inspector.backlog("nop", "workers")).in_flight == 2
    # a topic with no channel yet gives its messages to the first one
    assert (await inspector.backlog("fresh", "workers")).waiting == 4
    assert (await inspector.topics(prefix="no"))[0].topic == "nop"


async def test_lookupd_finds_the_nsqd_nodes(nsqd_http: int) -> None:
    rows = await open_inspector(f"nsqlookup://127.0.0.1:{nsqd_http}").topics()
    assert len(rows) == 3


async def test_nsq_cannot_peek_and_says_so(nsqd_http: int) -> None:
    with pytest.raises(CannotPeek, match="without delivering it"):
        await open_inspector(f"nsq://127.0.0.1:{nsqd_http - 1}").peek("nop", 3)


async def test_a_wrong_port_is_a_bus_error_naming_it() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(BusError, match=f"127.0.0.1:{port}"):
        await open_inspector(f"nsq://127.0.0.1:{port - 1}").topics()


def test_the_commands_on_nsq(nsqd_http: int, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nsq://127.0.0.1:{nsqd_http - 1}"
    assert main(["topics", "--bus", url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[3].split() == ["nop", "workers", "3", "2", "3", "1", "-", "-"]
    assert main(["peek", "nop", "--bus", url]) == 2
    assert "NSQ cannot show a message without delivering it" in capsys.readouterr().err
    assert main(["dlq", "ls", "--topic", "dead", "--bus", url]) == 2
    assert "replay --all or --id still works" in capsys.readouterr().err


@pytest.mark.nsq
@pytest.mark.skipif(not NSQD, reason="set TASK_TEST_NSQD=host:port to run against a real nsqd")
async def test_real_nsqd_backlog_matches_what_was_sent_and_held() -> None:
    # Given 5 tasks on a fresh topic, and a worker of "workers" holding 2 of them
    topic = "in" + uuid.uuid4().hex[:8]
    url = f"nsq://{NSQD}"
    producer = open_producer(url, credentials=Credentials())
    consumer = open_consumer(url, topic=topic, channel="workers", prefetch=2, credentials=Credentials())
    async with producer, consumer:
        for i in range(5):
            await producer.send(topic, Task.new("nop", "", id=f"t{i}").to_json())
        held = [await asyncio.wait_for(consumer.msg(), 15) for _ in range(2)]
        stats = await open_inspector(url).backlog(topic, "workers")
        # Then 3 wait and 2 are in flight
        assert (stats.waiting, stats.in_flight) == (3, 2)
        for message in held:
            assert message is not None
            await message.ack()


@pytest.mark.nsq
@pytest.mark.skipif(not NSQD, reason="set TASK_TEST_NSQD=host:port to run against a real nsqd")
def test_real_nsqd_dlq_replay_all(capsys: pytest.CaptureFixture[str]) -> None:
    # Given 2 dead letters on a fresh dead-letter topic
    from task.bus.deadletter import dead_letter_envelope

    dead, topic = "dl" + uuid.uuid4().hex[:8], "nop" + uuid.uuid4().hex[:8]
    url = f"nsq://{NSQD}"
    bodies = [Task.new("nop", "", id=f"t{i}").to_json() for i in range(2)]

    async def fill() -> None:
        async with open_producer(url, credentials=Credentials()) as producer:
            for b in bodies:
                await producer.send(dead, dead_letter_envelope(b, "boom", topic, 5))

    asyncio.run(fill())
    # When every one is replayed (NSQ cannot list, but can read and replay)
    assert main(["dlq", "replay", "--all", "--topic", dead, "--bus", url]) == 0
    assert capsys.readouterr().out == "replayed 2 of 2\n"

    # Then both tasks are on their topic again
    async def read_back() -> set[bytes]:
        async with open_consumer(url, topic=topic, channel="check", prefetch=2, credentials=Credentials()) as c:
            got = set()
            for _ in range(2):
                message = await asyncio.wait_for(c.msg(), 15)
                assert message is not None
                got.add(message.body)
                await message.ack()
            return got

    assert asyncio.run(read_back()) == set(bodies)
