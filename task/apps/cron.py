"""``taskbus cron``: create tasks on cron schedules.

Each rule is a cron expression (5 fields, 6 with seconds first as in Go's cron, or a
descriptor such as ``@hourly``), a task type, an info template rendered with the scheduled
time shifted by the rule's offset, and optional topic, job and meta.

Schedules run on wall time in ``timezone``; each wall time fires once. A time that does not
exist (in the DST gap) fires at the end of the gap, and only once even when several such
times fall into it; a time that happens twice (the overlap) fires at its first occurrence.

Task ids are UUID5s of the rule and the scheduled instant, so replicas running the same
rules make the same task. With a ledger, each tick has a fire key (``task.apps.fire_keys``)
that one replica takes and keeps for ``fire_key_ttl`` (default 1 day), after its task is
done too: the others skip the tick, however late they come within that time. Without a
ledger, duplicates carry the same id and are recognisable downstream.

Missed runs: the last fire time of each rule is kept in ``state_file`` (a small JSON file);
a fire whose send failed is not recorded there.
``catch_up = "all"`` fires every run missed since then on start-up; ``"skip"`` drops them.
While running, a loop that wakes late (a suspended machine) fires only the latest missed
run with ``skip`` and all of them with ``all``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task import rfc3339
from task.apps.fire_keys import FireKeys
from task.apps.lifecycle import Lifecycle, LifecycleApp, wait_or_stop
from task.apps.schedule import Clock, CronSchedule, SystemClock, is_valid_cron, zone
from task.apps.sender import TaskSender
from task.bus.base import Producer
from task.bus.registry import open_producer
from task.duration import Duration
from task.errors import BusError, ConfigError
from task.ledger.base import Ledger
from task.ledger.registry import open_ledger
from task.settings import AppSettings, BusSettings
from task.task import Task
from task.timetemplate import parse_offset, render, shift, unknown_placeholders

__all__ = ["CronApp", "CronRule", "CronSettings", "task_id"]

logger = logging.getLogger(__name__)

#: Namespace of cron task ids: uuid5(CRON_NAMESPACE, "<rule key>@<scheduled UTC time>").
CRON_NAMESPACE = uuid.UUID("6f1c9f4e-2d0b-5a7e-9c1d-7a54c3e0b2a1")
#: Longest single sleep, in seconds, so a wall-clock jump (NTP, suspend) is noticed soon.
MAX_SLEEP = 60.0


class CronRule(BaseModel):
    """One schedule: ``[[rule]]`` in TOML, or ``--rule 'CRON | TYPE | INFO [| OFFSET]'``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field(
        description="cron expression: 5 fields, 6 with seconds first, or @hourly, @daily, ..."
    )
    type: str = Field(min_length=1, description="task type")
    info: str = Field("", description="info template, rendered with the scheduled time")
    offset: str = Field("", description="shift of the rendered time, e.g. -1h or -1d")
    topic: str = Field("", description="topic (default: the task type)")
    job: str = Field("", description="the task's job")
    meta: dict[str, str] = Field(default_factory=dict, description="meta of every task")
    name: str = Field("", description="stable name (default: derived from the fields above)")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """Accept the one-line form and Go's keys (``template``, ``offset`` in hours)."""
        if isinstance(value, str):
            parts = [p.strip() for p in value.split("|")]
            if len(parts) < 2 or len(parts) > 4:
                raise ValueError(f"rule {value!r}: write 'CRON | TYPE | INFO [| OFFSET]'")
            return dict(zip(("cron", "type", "info", "offset"), parts, strict=False))
        if isinstance(value, dict):
            value = dict(value)
            if "template" in value and "info" not in value:
                value["info"] = value.pop("template")
            if isinstance(value.get("offset"), int):
                value["offset"] = f"{value['offset']}h"
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        expr = value.strip()
        if not is_valid_cron(expr):
            raise ValueError(
                f"{value!r} is not a cron expression; write 5 fields ('0 * * * *'), 6 with "
                "seconds first ('30 0 * * * *') or a descriptor (@hourly, @daily, @weekly)"
            )
        return expr

    @field_validator("offset")
    @classmethod
    def _valid_offset(cls, value: str) -> str:
        parse_offset(value)
        return value

    @property
    def key(self) -> str:
        """What identifies the rule in task ids and the state file."""
        if self.name:
            return self.name
        fields = [self.cron, self.type, self.info, self.offset, self.topic, self.job]
        text = json.dumps([*fields, sorted(self.meta.items())])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class CronSettings(BusSettings):
    """``taskbus cron``: create tasks on cron schedules."""

    rule: list[CronRule] = Field(
        default_factory=list,
        description="schedules ([[rule]] tables, or 'CRON | TYPE | INFO [| OFFSET]')",
    )
    timezone: str = Field(
        "UTC", description="zone the cron expressions and templates use (e.g. Europe/Paris)"
    )
    catch_up: Literal["skip", "all"] = Field(
        "skip", description="runs missed while down: skip them, or send all"
    )
    state_file: str = Field(
        "", description="JSON file keeping each rule's last run, for catch_up (empty: none)"
    )
    fire_key_ttl: Duration = Field(
        86400.0, gt=0,
        description="with a ledger: how long a fired tick keeps other replicas from firing it (1d)",
    )

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        zone(value)
        return value


def task_id(rule: CronRule, at: datetime) -> str:
    """The id of the task ``rule`` makes for the instant ``at``: the same in every replica."""
    return str(uuid.uuid5(CRON_NAMESPACE, f"{rule.key}@{rfc3339.format_utc(at)}"))


class CronApp(LifecycleApp):
    """Sends the tasks of ``rules`` at their scheduled times until stopped.

    The app takes ownership of the producer and ledger it is given: it starts and stops
    them. ``clock`` is injectable so a test runs a simulated day in milliseconds.
    """

    Settings: ClassVar[type[AppSettings]] = CronSettings

    def __init__(
        self,
        *,
        rules: Sequence[CronRule],
        producer: Producer,
        timezone: str = "UTC",
        catch_up: Literal["skip", "all"] = "skip",
        state_file: str | Path | None = None,
        ledger: Ledger | None = None,
        fire_key_ttl: float = 86400.0,
        clock: Clock | None = None,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
    ) -> None:
        if not rules:
            raise ConfigError("cron needs at least one rule; add --rule '0 * * * * | TYPE | INFO'")
        for rule in rules:
            for bad in unknown_placeholders(rule.info):
                logger.warning(
                    "rule %s: %s in info is no time template placeholder", rule.cron, bad
                )
        self.rules = list(rules)
        self.tz = zone(timezone)
        self.catch_up = catch_up
        self.state_file = Path(state_file) if state_file else None
        self.clock: Clock = clock or SystemClock()
        self.sender = TaskSender(producer, ledger)
        self.lifecycle = Lifecycle("cron", self.stats, logger=logger, parts=[producer],
                                   ledger=ledger, status_host=status_host,
                                   status_port=status_port)
        self.fire_keys = None if ledger is None else FireKeys(ledger, ttl=fire_key_ttl)
        self._schedules: list[tuple[CronRule, CronSchedule]] = []
        self._stopping = asyncio.Event()
        self._started = time.monotonic()
        self.missed = 0
        self.send_errors = 0
        #: ticks skipped because another replica holds their fire key
        self.fired_elsewhere = 0
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "bus": producer.info().get("bus"),
            "ledger": "" if ledger is None else type(ledger).__name__,
            "status_port": status_port or None, "timezone": timezone, "catch_up": catch_up,
            "state_file": str(state_file or ""), "rules": len(self.rules),
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> CronApp:
        """Build the app from ``CronSettings``; no I/O.

        Raises:
            ConfigError: no rules, an unknown zone, a bad bus or ledger URL.
        """
        assert isinstance(settings, CronSettings)
        app = cls(
            rules=settings.rule,
            producer=open_producer(settings.producer_url, credentials=settings.credentials()),
            timezone=settings.timezone,
            catch_up=settings.catch_up,
            state_file=settings.state_file or None,
            ledger=open_ledger(settings.ledger) if settings.ledger else None,
            fire_key_ttl=settings.fire_key_ttl,
            status_port=settings.status_port,
            status_host=settings.status_host,
        )
        app.startup.update(bus=settings.producer_url, ledger=settings.ledger)
        return app

    async def opened(self) -> None:
        """Warn when catch-up cannot know what was missed."""
        if self.catch_up == "all" and self.state_file is None:
            logger.warning(
                "catch_up = 'all' without state_file: runs missed while down are not known"
            )

    async def stop(self) -> None:
        """Stop after the task being sent now, if any. Idempotent."""
        self._stopping.set()

    async def work(self) -> int:
        """Send tasks at their times until ``stop()``; returns 0."""
        state = await asyncio.to_thread(self._load_state)
        now = self.clock.now()
        self._schedules = [
            (r, CronSchedule(r.cron, self.tz, self._resume_after(r, now, state)))
            for r in self.rules
        ]
        for rule, schedule in self._schedules:
            logger.info("rule %s (%s): next run at %s", rule.cron, rule.type, self._local(schedule.next_at))
        while not self._stopping.is_set():
            now = self.clock.now()
            fired = False
            for rule, schedule in self._schedules:
                due = schedule.pop_due(now)
                if len(due) > 1 and self.catch_up == "skip":
                    self.missed += len(due) - 1
                    logger.warning("rule %s: skipping %d missed runs", rule.cron, len(due) - 1)
                    due = due[-1:]
                for at in due:
                    if self._stopping.is_set():
                        break
                    if await self._fire(rule, at, schedule.next_at):
                        state[rule.key] = rfc3339.format_utc(at)
                        fired = True
            if fired and self.state_file is not None:
                await asyncio.to_thread(self._save_state, dict(state))
            wait = min(s.next_at for _, s in self._schedules) - self.clock.now()
            await wait_or_stop(self._stopping, min(max(wait.total_seconds(), 0.0), MAX_SLEEP),
                               self.clock.sleep)
        return 0

    def _resume_after(self, rule: CronRule, now: datetime, state: dict[str, str]) -> datetime:
        if self.catch_up == "all" and (last := rfc3339.parse(state.get(rule.key, ""))) is not None:
            return min(last, now)
        return now

    def _local(self, at: datetime) -> str:
        return at.astimezone(self.tz).isoformat()

    async def _fire(self, rule: CronRule, at: datetime, next_at: datetime) -> bool:
        """Send the task of ``rule`` for ``at`` unless another replica fired it. True when
        the tick is handled (sent, here or by another replica), False when the send failed."""
        info = render(rule.info, shift(at.astimezone(self.tz), rule.offset), meta=rule.meta)
        task = Task.new(
            rule.type, info, id=task_id(rule, at), job=rule.job or None, meta=rule.meta or None
        )
        task.created = rfc3339.format_utc(self.clock.now())
        topic = rule.topic or rule.type
        held = None if self.fire_keys is None else await self.fire_keys.take(rule.key, task)
        if held is False:
            self.fired_elsewhere += 1
            logger.info("rule %s (%s) for %s: task %s sent by another replica; next run at %s",
                        rule.cron, rule.type, self._local(at), task.id, self._local(next_at))
            return True
        try:
            # holding the key, this replica sends even when a failed try left a record
            sent = await self.sender.send(task, topic, skip_known=held is None)
        except BusError as err:
            self.send_errors += 1
            logger.error("rule %s: task %s for %s not sent: %s", rule.cron, task.id,
                         self._local(at), err)
            if held and self.fire_keys is not None:
                await self.fire_keys.give_back(rule.key, task)
            return False
        if self.fire_keys is not None:
            await self.fire_keys.sweep(rule.key, self.clock.now().timestamp())
        what = f"sent task {task.id} to {topic!r}" if sent else f"task {task.id} sent by another replica"
        logger.info("rule %s (%s) for %s: %s; next run at %s", rule.cron, rule.type,
                    self._local(at), what, self._local(next_at))
        return True

    def _load_state(self) -> dict[str, str]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            data = json.loads(self.state_file.read_text("utf-8"))
        except (OSError, ValueError) as err:
            logger.warning(
                "state file %s unreadable (%s): starting without it", self.state_file, err
            )
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_state(self, state: dict[str, str]) -> None:
        assert self.state_file is not None
        temp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps(state, indent=1, sort_keys=True), "utf-8")
            os.replace(temp, self.state_file)  # atomic: a crash leaves the old or the new file
        except OSError as err:
            logger.error("cannot write state file %s: %s", self.state_file, err)

    def stats(self) -> dict[str, object]:
        """Counters and each rule's next run, for ``/stats``."""
        return {
            "app": "cron",
            "runtime": round(time.monotonic() - self._started, 3),
            "timezone": str(self.tz),
            **self.sender.stats(),
            "missed": self.missed,
            "send_errors": self.send_errors,
            "fired_elsewhere": self.fired_elsewhere,
            "fire_key_errors": 0 if self.fire_keys is None else self.fire_keys.errors,
            "rules": [
                {
                    "cron": r.cron,
                    "type": r.type,
                    "name": r.name,
                    "next": s.next_at.astimezone(self.tz).isoformat(),
                }
                for r, s in self._schedules
            ],
        }
