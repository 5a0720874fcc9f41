"""``taskbus send TYPE INFO``: create one task, record it in the ledger, send it.

``--delay 15m`` or ``--at 2026-12-01T05:00:00Z`` sends it delayed (``task.delayed``): the bus
holds it where it can (NSQ, JetStream), otherwise the ledger does until a worker releases it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from task import rfc3339
from task.bus.broadcast import SCOPE_ALL, SCOPE_KEY, broadcast_topic
from task.bus.registry import open_producer
from task.delayed import RUN_AT, check_delayable, due_time, send_delayed
from task.duration import parse_duration
from task.errors import ConfigError, LedgerError
from task.ledger.registry import open_ledger
from task.settings import BusSettings, positional
from task.task import Task

__all__ = ["SendApp", "SendSettings", "parse_meta_pairs"]

logger = logging.getLogger(__name__)


class SendSettings(BusSettings):
    """``taskbus send``: create one task and send it."""

    task_type: str = positional("", description="the task's type")
    info: str = positional("", description="the task's info (what the worker needs)")
    topic: str = Field("", description="topic to send to (default: the task type)")
    id: str = Field("", description="task id (default: a new UUID)")
    job: str = Field("", description="the task's job")
    meta: list[str] = Field(default_factory=list, description="meta key=value pairs")
    count: int = Field(1, ge=1, description="send this many tasks (info gets no suffix; ids are new)")
    delay: str = Field("", description="deliver after this long (90s, 15m, 2h); needs native delay or --ledger")
    at: str = Field("", description="deliver at this time, RFC 3339 (2026-12-01T05:00:00Z); needs native delay or --ledger")
    scope: Literal["", "all"] = Field("", description="'all': every worker of the type running now does it once (topic <topic>.all; every worker listens unless started with --no-broadcast)")


def parse_meta_pairs(pairs: list[str]) -> dict[str, list[str]]:
    """``["a=1", "b=x"]`` as meta values.

    Raises:
        ConfigError: a pair has no ``=``.
    """
    values: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--meta {pair!r} must be key=value")
        values.setdefault(key, []).append(value)
    return values


class SendApp:
    """Sends ``count`` tasks of one type, recording each as created when a ledger is set."""

    Settings: ClassVar[type[SendSettings]] = SendSettings

    def __init__(self, settings: SendSettings) -> None:
        if not settings.task_type:
            raise ConfigError("usage: taskbus send TYPE INFO [--bus URL] [--topic T] [--meta k=v]")
        if settings.id and settings.count > 1:
            raise ConfigError("--id names one task; it cannot be combined with --count")
        if not settings.info:
            # Go allows a task without info, so it is sent; but a forgotten argument is the
            # likelier story, and a worker receiving "" fails far from here
            logger.warning("no INFO given: sending %r with empty info (taskbus send TYPE INFO)",
                           settings.task_type)
        self.settings = settings
        self.meta = parse_meta_pairs(settings.meta)
        self.sent: list[Task] = []
        self.delay = _delay_of(settings)
        self.at = _at_of(settings)

    @classmethod
    def from_settings(cls, settings: SendSettings) -> SendApp:
        return cls(settings)

    async def run(self) -> int:
        s = self.settings
        producer = open_producer(s.producer_url, credentials=s.credentials())
        # a broadcast (--scope all) is not recorded here: each instance records its own run
        ledger = open_ledger(s.ledger) if s.ledger and s.scope != SCOPE_ALL else None
        topic = s.topic or s.task_type
        if s.scope == SCOPE_ALL:
            topic, self.meta[SCOPE_KEY] = broadcast_topic(topic), [SCOPE_ALL]
        if self.delay is not None or self.at is not None:
            check_delayable(producer, ledger)  # before connecting: nothing could be sent
        try:
            async with producer:
                for _ in range(s.count):
                    task = Task.new(s.task_type, s.info, id=s.id or None, job=s.job or None, meta=self.meta or None)
                    if self.delay is not None or self.at is not None:
                        at = due_time(at=self.at, delay=self.delay)
                        held = await send_delayed(producer, topic, task, at, ledger=ledger)
                        logger.info("task %s delayed until %s, held by the %s", held.id,
                                    held.task.get_meta(RUN_AT), "bus" if held.how == "native" else "ledger")
                        self.sent.append(held.task)
                        continue
                    if ledger is not None:
                        try:
                            await ledger.created(task, s.task_type)
                        except LedgerError as err:
                            logger.warning("ledger: %s (sending anyway)", err)
                    await producer.send(topic, task.to_json(), key=task.id)
                    self.sent.append(task)
        finally:
            if ledger is not None:
                await ledger.close()
        if s.count == 1:
            print(self.sent[0])
        else:
            print(f"sent {s.count} {s.task_type} tasks to {topic!r}")
        return 0

    async def stop(self) -> None:
        """Sending is short; nothing to interrupt."""


def _delay_of(settings: SendSettings) -> float | None:
    """``--delay`` in seconds, or None.

    Raises:
        ConfigError: not a duration, or given with ``--at``.
    """
    if settings.delay and settings.at:
        raise ConfigError("give --delay or --at, not both")
    return parse_duration(settings.delay, "--delay") if settings.delay else None


def _at_of(settings: SendSettings) -> datetime | None:
    """``--at`` as an aware time, or None.

    Raises:
        ConfigError: not an RFC 3339 time with a zone.
    """
    if not settings.at:
        return None
    at = rfc3339.parse(settings.at)
    if at is None:
        raise ConfigError(f"--at {settings.at!r} is not an RFC 3339 time; use e.g. 2026-12-01T05:00:00Z")
    return at
