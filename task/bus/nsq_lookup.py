"""nsqlookupd discovery and nsqd's topic creation, over a minimal HTTP/1.0 client.

nsqlookupd answers ``GET /lookup?topic=T`` with the nsqd nodes that have the topic and
``GET /nodes`` with every nsqd it knows; nsqd creates a topic on ``POST /topic/create``.
Three small GETs/POSTs do not justify an HTTP dependency, so this speaks HTTP/1.0 over
asyncio streams (1.0, so Go's server never answers chunked and closes when done).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from urllib.parse import quote

from task.errors import BusError

__all__ = ["Node", "create_topic", "http_request", "lookup", "nodes", "parse_nodes"]

logger = logging.getLogger(__name__)

#: Asks nsqlookupd/nsqd for the unwrapped JSON (without ``{"status_code":..,"data":..}``).
_ACCEPT = "application/vnd.nsq; version=1.0"
#: Longest HTTP answer we read: lookup answers are small; more means a wrong port.
_MAX_ANSWER = 4 * 1024 * 1024


@dataclass(frozen=True)
class Node:
    """One nsqd as nsqlookupd describes it."""

    address: str  #: its broadcast address, as clients should dial it
    tcp_port: int
    http_port: int

    @property
    def tcp(self) -> tuple[str, int]:
        return (self.address, self.tcp_port)


async def http_request(
    host: str, port: int, method: str, path: str, *, timeout: float = 5.0
) -> tuple[int, bytes]:
    """``(status, body)`` of one HTTP/1.0 request with no body.

    Raises:
        BusError: the server cannot be reached, is too slow, or does not speak HTTP.
    """
    where = f"http://{host}:{port}{path}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: {_ACCEPT}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            raw = await reader.read(_MAX_ANSWER)
            while chunk := await reader.read(_MAX_ANSWER):
                raw += chunk
    except (OSError, TimeoutError) as err:
        raise BusError(f"cannot reach {where}: {err or type(err).__name__}") from err
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
    head, sep, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise BusError(f"{where} did not answer HTTP; is this an nsqlookupd/nsqd HTTP port?")
    return int(status_line[1]), body


def _unwrap(body: bytes, where: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError as err:
        raise BusError(f"{where} answered with something other than JSON: {body[:80]!r}") from err
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "status_code" in data:
        data = data["data"]  # nsqlookupd before 1.0 wraps every answer
    if not isinstance(data, dict):
        raise BusError(f"{where} answered with unexpected JSON: {body[:80]!r}")
    return data


def parse_nodes(data: dict[str, object]) -> list[Node]:
    """The nsqd nodes in a ``/lookup`` or ``/nodes`` answer (its ``producers`` list)."""
    found: list[Node] = []
    producers = data.get("producers")
    for item in producers if isinstance(producers, list) else []:
        if not isinstance(item, dict):
            continue
        address = item.get("broadcast_address") or item.get("address")
        tcp_port, http_port = item.get("tcp_port"), item.get("http_port")
        if isinstance(address, str) and isinstance(tcp_port, int):
            found.append(Node(address, tcp_port, http_port if isinstance(http_port, int) else 0))
    return found


async def lookup(host: str, port: int, topic: str, *, timeout: float = 5.0) -> list[Node]:
    """The nsqd nodes that have ``topic``, per the nsqlookupd at ``host:port`` ([] if none).

    Raises:
        BusError: nsqlookupd cannot be reached or answered an error.
    """
    path = f"/lookup?topic={quote(topic)}"
    status, body = await http_request(host, port, "GET", path, timeout=timeout)
    if status == 404:
        return []  # TOPIC_NOT_FOUND: nobody published to it yet
    if status != 200:
        raise BusError(f"nsqlookupd {host}:{port}{path} answered HTTP {status}: {body[:120]!r}")
    return parse_nodes(_unwrap(body, f"nsqlookupd {host}:{port}"))


async def nodes(host: str, port: int, *, timeout: float = 5.0) -> list[Node]:
    """Every nsqd the nsqlookupd at ``host:port`` knows.

    Raises:
        BusError: nsqlookupd cannot be reached or answered an error.
    """
    status, body = await http_request(host, port, "GET", "/nodes", timeout=timeout)
    if status != 200:
        raise BusError(f"nsqlookupd {host}:{port}/nodes answered HTTP {status}: {body[:120]!r}")
    return parse_nodes(_unwrap(body, f"nsqlookupd {host}:{port}"))


async def create_topic(node: Node, topic: str, *, timeout: float = 5.0) -> None:
    """Create ``topic`` on ``node`` (a no-op when it exists), as the Go toolkit does.

    Raises:
        BusError: nsqd cannot be reached or refused.
    """
    path = f"/topic/create?topic={quote(topic)}"
    status, body = await http_request(node.address, node.http_port, "POST", path, timeout=timeout)
    if status != 200:
        raise BusError(
            f"nsqd {node.address}:{node.http_port}{path} answered HTTP {status}: {body[:120]!r}"
        )
