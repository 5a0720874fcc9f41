"""Inspecting NSQ: each nsqd's ``/stats?format=json``, summed over the nsqd nodes.

Per channel, nsqd counts ``depth`` (waiting, in memory and on disk), ``in_flight_count``,
``deferred_count`` (given back with a delay: reported as delayed) and ``requeue_count`` plus
``timeout_count`` (deliveries that came back, since nsqd started: reported as redelivered).
A topic with no channel yet keeps its messages itself (the topic's ``depth``); the first
channel gets them. nsqd keeps no message time a client can read, so the oldest waiting
task's age is unknown. NSQ cannot show a message without delivering it (which counts as an
attempt and moves it to the back on requeue), so ``peek`` refuses.

``nsq://h:4150`` asks the nsqd HTTP port beside it (the TCP port + 1, nsqd's default);
``nsqlookup://h:4161`` asks every nsqd the lookupd knows, at the HTTP port it announces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote

from task.bus import nsq_lookup as lookupd
from task.bus.nsq import NsqOptions
from task.credentials import Credentials
from task.errors import BusError
from task.inspect.base import CannotPeek, TopicStats

__all__ = ["CANNOT_PEEK", "NsqInspector", "open_inspector", "stats_rows"]

CANNOT_PEEK = (
    "NSQ cannot show a message without delivering it to a consumer (which counts as an "
    "attempt and sends it to the back of the channel); use `taskbus topics` for the counts"
)
_ACCEPT_JSON = "/stats?format=json"


def _int(doc: dict[str, object], key: str) -> int:
    value = doc.get(key)
    return value if isinstance(value, int) else 0


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def stats_rows(answers: Iterable[dict[str, object]], prefix: str | None = None) -> list[TopicStats]:
    """Rows of ``/stats`` answers of one or more nsqd, the same topic and channel summed."""
    rows: dict[tuple[str, str], TopicStats] = {}

    def row(topic: str, channel: str) -> TopicStats:
        found = rows.get((topic, channel))
        if found is None:
            found = rows[(topic, channel)] = TopicStats(
                topic, channel, waiting=0, in_flight=0, redelivered=0, delayed=0
            )
        return found

    for answer in answers:
        for topic in _dicts(answer.get("topics")):
            name = topic.get("topic_name")
            if not isinstance(name, str) or (prefix and not name.startswith(prefix)):
                continue
            channels = _dicts(topic.get("channels"))
            if not channels:
                stats = row(name, "")
                stats.waiting = (stats.waiting or 0) + _int(topic, "depth")
            for channel in channels:
                stats = row(name, str(channel.get("channel_name", "")))
                stats.waiting = (stats.waiting or 0) + _int(channel, "depth")
                stats.in_flight = (stats.in_flight or 0) + _int(channel, "in_flight_count")
                stats.delayed = (stats.delayed or 0) + _int(channel, "deferred_count")
                stats.redelivered = (stats.redelivered or 0) + _int(channel, "requeue_count") + _int(
                    channel, "timeout_count"
                )
    for (_, name), stats in rows.items():
        if name:
            stats.notes.append("redelivered: requeues and timeouts since nsqd started; delayed: deferred")
        else:
            stats.notes.append("no channel yet: the first channel gets every waiting message")
    return [rows[key] for key in sorted(rows)]


class NsqInspector:
    """Asks every nsqd of the URL for its stats over HTTP; holds no connection."""

    def __init__(self, options: NsqOptions, timeout: float = 5.0) -> None:
        self.options = options
        self.timeout = timeout

    async def _http_addresses(self) -> list[tuple[str, int]]:
        if not self.options.lookupd:
            return [(host, port + 1) for host, port in self.options.nsqd]
        found: dict[tuple[str, int], None] = {}
        errors: list[str] = []
        for host, port in self.options.lookupd:
            try:
                nodes = await lookupd.nodes(host, port, timeout=self.timeout)
            except BusError as err:
                errors.append(str(err))
                continue
            found.update(dict.fromkeys((n.address, n.http_port) for n in nodes if n.http_port))
        if errors and len(errors) == len(self.options.lookupd):
            raise BusError(f"no nsqlookupd answered: {'; '.join(errors)}")
        return list(found)

    async def _answers(self, query: str = "") -> list[dict[str, object]]:
        answers = []
        for host, port in await self._http_addresses():
            path = _ACCEPT_JSON + query
            status, body = await lookupd.http_request(host, port, "GET", path, timeout=self.timeout)
            if status != 200:
                raise BusError(f"nsqd http://{host}:{port}{path} answered HTTP {status}: {body[:120]!r}")
            try:
                doc = json.loads(body)
            except ValueError as err:
                raise BusError(
                    f"http://{host}:{port}{path} did not answer JSON; is {port} nsqd's HTTP port "
                    "(the TCP port + 1 by default)?"
                ) from err
            if isinstance(doc, dict) and isinstance(doc.get("data"), dict):
                doc = doc["data"]  # nsqd before 1.0 wraps every answer
            if isinstance(doc, dict):
                answers.append(doc)
        return answers

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        return stats_rows(await self._answers(), prefix)

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        channel = channel or topic
        rows = [r for r in stats_rows(await self._answers(f"&topic={quote(topic)}")) if r.topic == topic]
        for stats in rows:
            if stats.channel == channel:
                return stats
        if rows and rows[0].channel == "":
            # no channel yet: the first one (a worker's) gets every waiting message
            first = f"channel {channel!r} does not exist yet: it will get the messages the topic holds"
            return TopicStats(topic, channel, waiting=rows[0].waiting, in_flight=0, redelivered=0,
                              delayed=0, notes=[first])
        note = (f"channel {channel!r} does not exist yet: it will get only tasks sent after it is created"
                if rows else f"no topic {topic!r} on nsqd yet: nothing was sent")
        return TopicStats(topic, channel, waiting=0, in_flight=0, redelivered=0, delayed=0, notes=[note])

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        raise CannotPeek(CANNOT_PEEK)

    async def close(self) -> None:
        """Nothing is held open."""


def open_inspector(url: str, *, credentials: Credentials) -> NsqInspector:
    """``nsq://h:p`` or ``nsqlookup://h:p``.

    Raises:
        ConfigError: a malformed URL or option.
    """
    return NsqInspector(NsqOptions.from_url(url))
