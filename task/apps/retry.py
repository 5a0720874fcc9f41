"""``taskbus retry``: resend failed tasks after a growing, jittered delay.

The retry app reads the done topic. A task that ended in ``error`` and whose type has a rule
is sent again to its topic (same id, ``retry=n`` in its meta, ``result``/``msg``/``started``/
``ended`` cleared) after ``delay * backoff**(n-1)`` seconds (capped at ``max_delay``, then
spread by ``jitter``), until it has been retried ``count`` times; after that its done task
goes to the ``retry-failed`` topic for a human. Pending retries are held in the ledger
(``schedule``/``due``) so a restart loses none; without a ledger they live in memory only,
and the app says so when it starts. When the ledger refuses a retry, the done task is given
back to the bus (nacked with a delay) rather than acknowledged with its retry held only in
memory, so the retry is not lost if the app dies before the ledger is back.

A retry's due time is counted from the failed task's ``ended`` time, with a jitter drawn
from its id and retry number, so reading the same done task again (a re-read file bus, a
redelivery) finds the same time instead of pushing the retry further out; a retry already
scheduled or already sent and still outstanding in the ledger is not scheduled twice.
Every run first sends the retries that came due since the last one, so on a finite bus
(``file:``) each run both takes new failures and sends the retries whose time has come.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task.apps.done_message import read_done
from task.apps.lifecycle import Lifecycle, LifecycleApp, wait_or_stop
from task.bus.base import Consumer, Message, Producer
from task.bus.registry import open_consumer, open_producer
from task.duration import Duration, format_duration
from task.errors import BusError, ConfigError, LedgerError
from task.ledger.base import Ledger, ScheduleKind
from task.ledger.registry import open_ledger
from task.result import Result
from task.settings import AppSettings, BusSettings
from task.task import Task

__all__ = ["RetryApp", "RetryRule", "RetrySettings"]

logger = logging.getLogger(__name__)

#: Seconds before a due retry whose send failed, or a done task whose retry the ledger
#: refused, is tried again.
SEND_AGAIN_AFTER = 5.0
#: Tasks whose latest scheduled retry the app remembers, to know a re-read done task.
MAX_REMEMBERED = 100_000


class RetryRule(BaseModel):
    """How tasks of one type are retried. Durations are seconds or ``30s``, ``5m``, ``2h``.

    On the command line a rule is one string: ``"TYPE count=3 delay=30s backoff=2"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, description="task type the rule applies to")
    count: int = Field(3, ge=1, description="retries before the task goes to the failed topic")
    delay: Duration = Field(60.0, ge=0, description="wait before the first retry (30s, 5m; plain numbers are seconds)")
    backoff: float = Field(2.0, ge=1, description="each retry waits this many times longer")
    max_delay: Duration = Field(3600.0, ge=0, description="cap on the delay before jitter (1h; plain numbers are seconds)")
    jitter: float = Field(0.1, ge=0, le=1, description="spread delays by +/- this fraction")
    topic: str = Field("", description="topic the task is resent to (default: its type)")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        return rule_from_text(value, "type") if isinstance(value, str) else value

    def wait(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before the ``retry``-th retry (1-based)."""
        base = min(self.delay * self.backoff ** (retry - 1), self.max_delay)
        return max(0.0, base * (1 + rng.uniform(-self.jitter, self.jitter)))

    def __str__(self) -> str:
        text = f"{self.type} count={self.count} delay={self.delay:g}s backoff={self.backoff:g}"
        text += f" max_delay={self.max_delay:g}s jitter={self.jitter:g}"
        return text + (f" topic={self.topic}" if self.topic else "")


class RetrySettings(BusSettings):
    """``taskbus retry``: resend tasks that ended in error, with backoff."""

    rule: list[RetryRule] = Field(
        default_factory=list,
        description='retry rules, TOML [[rule]] tables or "TYPE count=3 delay=30s backoff=2 '
        'max_delay=1h jitter=0.1 topic=T"',
    )
    done_topic: str = Field("done", description="topic of done tasks to read")
    channel: str = Field("retry", description="channel / consumer group on the done topic")
    failed_topic: str = Field("retry-failed", description="topic for tasks out of retries")
    poll_interval: Duration = Field(1.0, gt=0, description="time between checks for due retries (1s, 30s; plain numbers are seconds)")

    @field_validator("rule")
    @classmethod
    def _one_rule_per_type(cls, rules: list[RetryRule]) -> list[RetryRule]:
        types = [r.type for r in rules]
        doubled = sorted({t for t in types if types.count(t) > 1})
        if doubled:
            raise ValueError(f"more than one rule for type {doubled[0]!r}; keep one")
        return rules


class RetryApp(LifecycleApp):
    """Consumes done tasks and resends failed ones per ``rules``.

    The app takes ownership of the consumer, producer and ledger it is given: it starts and
    stops them. ``clock`` (aware datetimes) and ``rng`` (jitter of tasks without an id) are
    injectable for tests.
    """

    Settings: ClassVar[type[AppSettings]] = RetrySettings

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        rules: Sequence[RetryRule],
        ledger: Ledger | None = None,
        failed_topic: str = "retry-failed",
        poll_interval: float = 1.0,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        if not rules:
            raise ConfigError("retry needs at least one rule; add --rule 'TYPE count=3 delay=30s'")
        self.consumer = consumer
        self.producer = producer
        self.rules = {rule.type: rule for rule in rules}
        self.ledger = ledger
        self.failed_topic = failed_topic
        self.poll_interval = poll_interval
        self.clock = clock
        self.rng = rng or random.Random()
        self.lifecycle = Lifecycle("retry", self.stats, logger=logger, parts=[consumer, producer],
                                   ledger=ledger, status_host=status_host,
                                   status_port=status_port)
        #: retries held here without a ledger (or when the ledger refused one): (at, seq, task)
        self._heap: list[tuple[datetime, int, Task]] = []
        self._seq = 0
        #: highest retry number this run scheduled, per (type, id); the newest MAX_REMEMBERED
        self._scheduled: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._stopped = asyncio.Event()
        self._started = time.monotonic()
        self.counts = {k: 0 for k in ("consumed", "invalid", "ignored", "scheduled", "resent",
                                      "failed", "duplicates", "send_errors", "ledger_errors",
                                      "ack_errors")}
        info = consumer.info()
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "bus": info.get("bus"), "topic": info.get("topic"), "channel": info.get("channel"),
            "ledger": "" if ledger is None else type(ledger).__name__,
            "status_port": status_port or None, "failed_topic": failed_topic,
            "poll_interval": format_duration(poll_interval),
            "rules": "; ".join(map(str, rules)),
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> RetryApp:
        """Build the app from ``RetrySettings``; no I/O.

        Raises:
            ConfigError: no rules, or a bad bus or ledger URL.
        """
        assert isinstance(settings, RetrySettings)
        creds = settings.credentials()
        app = cls(
            consumer=open_consumer(settings.bus, topic=settings.done_topic,
                                   channel=settings.channel, credentials=creds),
            producer=open_producer(settings.producer_url, credentials=creds),
            rules=settings.rule,
            ledger=open_ledger(settings.ledger) if settings.ledger else None,
            failed_topic=settings.failed_topic,
            poll_interval=settings.poll_interval,
            status_port=settings.status_port,
            status_host=settings.status_host,
        )
        app.startup.update(bus=settings.bus, out_bus=settings.out_bus, topic=settings.done_topic,
                           channel=settings.channel, ledger=settings.ledger)
        return app

    async def opened(self) -> None:
        """Say so when pending retries can only live in memory."""
        if self.ledger is None:
            logger.warning("no ledger configured: pending retries live in memory only and are "
                           "lost on restart; set --ledger sqlite:PATH to keep them")

    async def closing(self) -> None:
        """Say how many retries held in memory are dropped."""
        if self._heap:
            logger.warning("%d pending retries held in memory are dropped", len(self._heap))

    async def work(self) -> int:
        """Send the retries due since the last run, then handle done tasks and release due
        retries until stopped.

        When a finite done topic is drained, the app sends what has come due, keeps running
        until every retry it holds in memory is sent, and returns; retries in the ledger
        that are not due yet wait for the next run.
        """
        await self.release_due()
        releaser = asyncio.create_task(self._release_loop())
        try:
            while (message := await self.consumer.msg()) is not None:
                try:
                    await self.handle(message)
                except BusError as err:  # ack/nack failed: the bus redelivers, handling is idempotent
                    self.counts["ack_errors"] += 1
                    logger.error("acknowledging a done task failed: %s", err)
            while self._heap and not self._stopped.is_set():
                await asyncio.wait([releaser], timeout=self.poll_interval)
        finally:
            drained = not self._stopped.is_set()
            self._stopped.set()
            await releaser
        if drained:  # what came due while the topic was read
            await self.release_due()
        return 0

    async def stop(self) -> None:
        """Stop consuming and releasing; ``run()`` returns. Idempotent."""
        self._stopped.set()
        await self.consumer.stop()

    async def handle(self, message: Message) -> None:
        """Schedule a retry of one done task or pass it to the failed topic, then ack.

        A message that is not a task is counted, logged and acknowledged. A done task whose
        retry is already scheduled (or sent and still outstanding) is acknowledged and
        counted as a duplicate; its retry keeps its time. When the failed topic cannot be
        reached, or the ledger refuses the retry, the message is nacked so the bus brings it
        back.
        """
        done = await read_done(message, self.counts, logger)
        if done is None:
            return
        rule = self.rules.get(done.type)
        if rule is None or done.result != Result.ERROR:
            self.counts["ignored"] += 1
            await message.ack()
            return
        retried = _retry_count(done)
        if retried >= rule.count:
            try:
                await self.producer.send(self.failed_topic, message.body)
            except BusError as err:
                self.counts["send_errors"] += 1
                logger.error("cannot send task %s to %r, will see it again: %s",
                             done.id, self.failed_topic, err)
                await message.nack(self.poll_interval)
                return
            self.counts["failed"] += 1
            logger.info("task %s (%s) out of retries after %d: sent to %r", done.id, done.type,
                        retried, self.failed_topic)
            await message.ack()
            return
        if await self._known(done, retried + 1):
            self.counts["duplicates"] += 1
            logger.info("task %s (%s) retry %d is scheduled already: keeping its time",
                        done.id, done.type, retried + 1)
            await message.ack()
            return
        again = done.copy(result="", msg="", started="", ended="")
        again.set_meta("retry", str(retried + 1))
        at = self._due_time(done, rule, retried + 1)
        if not await self._schedule(again, at, hold_if_refused=False):
            await message.nack(SEND_AGAIN_AFTER)
            return
        self.counts["scheduled"] += 1
        logger.info("task %s (%s) retry %d at %s (in %s)", done.id, done.type, retried + 1,
                    at.isoformat(timespec="seconds"),
                    format_duration(max(0.0, (at - self.clock()).total_seconds())))
        await message.ack()

    async def release_due(self) -> int:
        """Send every retry whose time has come; returns how many were sent."""
        now = self.clock()
        due: list[tuple[Task, str]] = []
        while self._heap and self._heap[0][0] <= now:
            task = heapq.heappop(self._heap)[2]
            due.append((task, self._topic(task)))
        if self.ledger is not None:
            for task_type in self.rules:
                try:
                    due.extend((entry.task, entry.topic) for entry in
                               await self.ledger.due(task_type, now, kind=ScheduleKind.RETRY))
                except LedgerError as err:
                    self.counts["ledger_errors"] += 1
                    logger.error("cannot read due retries of %r from the ledger: %s", task_type, err)
        sent = 0
        for task, topic in due:
            try:
                await self.producer.send(topic, task.to_json())
            except BusError as err:
                self.counts["send_errors"] += 1
                logger.error("cannot resend task %s to %r, trying again later: %s", task.id, topic, err)
                await self._schedule(task, now + timedelta(seconds=SEND_AGAIN_AFTER))
                continue
            sent += 1
            self.counts["resent"] += 1
            logger.info("task %s (%s) retry %s sent to %r", task.id, task.type,
                        task.get_meta("retry", "?"), topic)
        return sent

    def pending(self) -> int:
        """Retries held in memory (the ledger's are counted by ``taskbus ledger stats``)."""
        return len(self._heap)

    def stats(self) -> dict[str, object]:
        """Counters for the status endpoint."""
        return {
            "app": "retry",
            "runtime_s": round(time.monotonic() - self._started, 3),
            **self.counts,
            "pending_in_memory": len(self._heap),
            "memory_only": self.ledger is None,
            "consumer": self.consumer.info(),
            "producer": self.producer.info(),
        }

    def _due_time(self, done: Task, rule: RetryRule, retry: int) -> datetime:
        """When retry ``retry`` of ``done`` is due: counted from when the task ended, jitter
        drawn from its id, so the same done task read twice gets the same time."""
        now = self.clock()
        ended = done.ended_at
        base = ended if ended is not None and ended <= now else now
        rng = random.Random(f"{done.type}/{done.id}/{retry}") if done.id else self.rng
        return base + timedelta(seconds=rule.wait(retry, rng))

    async def _known(self, done: Task, retry: int) -> bool:
        """True when retry ``retry`` (or a later one) of ``done`` is scheduled already, or
        was sent and is still outstanding in the ledger."""
        if not done.id:
            return False
        if self._scheduled.get((done.type, done.id), 0) >= retry:
            return True
        if self.ledger is None:
            return False
        try:
            record = await self.ledger.find(done.type, done.id)
        except LedgerError as err:
            self.counts["ledger_errors"] += 1
            logger.error("cannot look up task %s in the ledger: %s", done.id, err)
            return False
        return record is not None and _retry_count(record.task) >= retry

    def _topic(self, task: Task) -> str:
        """Where a retry of ``task`` is sent: its rule's topic, else its type."""
        rule = self.rules.get(task.type)
        return (rule.topic if rule else "") or task.type

    async def _schedule(self, task: Task, at: datetime, *, hold_if_refused: bool = True) -> bool:
        """Hold ``task`` until ``at``: in the ledger when there is one, else in memory.

        When the ledger refuses it, the retry is held in memory, or, with
        ``hold_if_refused=False``, not held at all: False, and the caller gives the done task
        back to the bus so the retry survives the app.
        """
        if self.ledger is not None and task.id:
            try:
                await self.ledger.schedule(task, None, at, topic=self._topic(task),
                                           kind=ScheduleKind.RETRY)
                self._remember(task)
                return True
            except LedgerError as err:
                self.counts["ledger_errors"] += 1
                if not hold_if_refused:
                    logger.error("ledger refused retry %d of %s, the done task goes back to the bus "
                                 "for %s: %s", _retry_count(task), task.id,
                                 format_duration(SEND_AGAIN_AFTER), err)
                    return False
                logger.error("ledger refused retry of %s, holding it in memory: %s", task.id, err)
        elif self.ledger is not None:
            logger.warning("task of type %r has no id: its retry is held in memory only", task.type)
        self._remember(task)
        if task.id:  # one retry per task: a newer one replaces an older one
            kept = [entry for entry in self._heap if (entry[2].type, entry[2].id) != (task.type, task.id)]
            if len(kept) != len(self._heap):
                self._heap = kept
                heapq.heapify(self._heap)
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, task))
        return True

    def _remember(self, task: Task) -> None:
        """Note the retry number scheduled for ``task``, to know a re-read done task."""
        if task.id:
            key = (task.type, task.id)
            self._scheduled[key] = max(self._scheduled.pop(key, 0), _retry_count(task))
            if len(self._scheduled) > MAX_REMEMBERED:
                self._scheduled.popitem(last=False)

    async def _release_loop(self) -> None:
        while not self._stopped.is_set():
            await self.release_due()
            await wait_or_stop(self._stopped, self.poll_interval)


def rule_from_text(text: str, first: str) -> dict[str, str]:
    """``"fetch count=3 delay=30s"`` -> ``{"type": "fetch", "count": "3", "delay": "30s"}``.

    The first word without ``=`` is the value of ``first``; pydantic then checks each value.

    Raises:
        ValueError: a word is neither the first value nor ``key=value``.
    """
    values: dict[str, str] = {}
    for word in text.replace(",", " ").split():
        key, sep, value = word.partition("=")
        if sep:
            values[key] = value
        elif first not in values:
            values[first] = word
        else:
            raise ValueError(f"{word!r} in rule {text!r} is not key=value")
    return values


def _retry_count(task: Task) -> int:
    """How often the task was retried already (``retry`` in its meta; junk counts as 0)."""
    text = task.get_meta("retry", "0")
    return int(text) if text.isdigit() else 0
