"""``taskbus flow``: the workflow taskmaster (Go's flowlord) — phases on cron or files,
children when their parent completes, retries, alerts, a JSON API and a web console.

It reads the done topic (and, optionally, a topic of file stats), starts what the workflow
files say (``task.flow.engine``), keeps retries in the ledger's schedule, records every task
event in the task store (by default in the ledger's database), raises alerts on the alert
topic (and, with ``--webhook``, summaries of them to a chat webhook), and serves ``/info``,
``/task/{id}``, ``/recap``, ``/backload``, ``/refresh`` and the console (``/console/...``,
``docs/console.md``) on its status port beside ``/healthz``, ``/stats`` and ``/metrics``.
Workflow files are reloaded when they change (checked every ``reload_every``); a bad file
keeps the version loaded before. Do not run ``taskbus retry`` for workflow task types: both
would retry them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field

from task.apps.done_message import read_done
from task.apps.lifecycle import Lifecycle, LifecycleApp, Part, wait_or_stop
from task.apps.schedule import Clock, SystemClock
from task.apps.sender import TaskSender
from task.bus.base import Consumer, Message, Producer
from task.bus.registry import open_consumer, open_producer
from task.duration import Duration, format_duration
from task.errors import BusError, ConfigError, LedgerError
from task.flow.alerts import Alerts, Notifier, TopicNotifier
from task.flow.api import FlowApiServer
from task.flow.cron_phases import CronPhases
from task.flow.engine import FlowEngine
from task.flow.file_phases import parse_stats
from task.flow.loader import WorkflowSet
from task.flow.retention import Retention
from task.flow.store import TaskStore, open_store
from task.flow.webhook import WebhookNotifier
from task.ledger.base import Ledger
from task.ledger.memory import MemoryLedger
from task.ledger.registry import open_ledger
from task.metrics import stats_metrics
from task.settings import AppSettings, BusSettings

__all__ = ["FlowApp", "FlowSettings"]

logger = logging.getLogger(__name__)

#: Seconds a done task or file whose handling failed (bus or ledger down) waits to come back.
NACK_DELAY = 5.0
#: Seconds between two looks for tasks not done within ``task_ttl``.
INCOMPLETE_EVERY = 60.0


class FlowSettings(BusSettings):
    """``taskbus flow``: run workflows: phases, dependsOn, retries."""

    workflow: str = Field("", description="workflow file or directory of *.toml files (required)")
    store: str = Field("", description="task store URL (sqlite:PATH, memory:, cassandra://); default: the ledger's")
    done_topic: str = Field("done", description="topic of done tasks")
    channel: str = Field("flow", description="channel / consumer group on the done and files topics")
    files_topic: str = Field("", description="topic of file stats that start file phases (empty: none)")
    failed_topic: str = Field("flow-failed", description="topic of tasks out of retries ('-': none)")
    alert_topic: str = Field("flow-alerts", description="topic alerts are sent to as tasks")
    task_ttl: Duration = Field(4 * 3600.0, ge=0, description="alert once for a task not done within this (0: never)")
    retention: Duration = Field(30 * 86400.0, gt=0, description="how long the task store keeps a day")
    reload_every: Duration = Field(5.0, gt=0, description="how often workflow files are checked for changes")
    poll_interval: Duration = Field(1.0, gt=0, description="how often due retries are looked for")
    fire_key_ttl: Duration = Field(86400.0, gt=0, description="how long a fired cron tick or child keeps other replicas from firing it")
    max_in_progress: int = Field(16, ge=1, description="done tasks handled at once (also the done consumer's prefetch)")
    webhook: str = Field("", description="URL alert summaries are posted to (Slack-compatible; empty: none)")
    alert_min_wait: Duration = Field(60.0, gt=0, description="least time between two alert summaries (and the first alert's wait for its burst)")
    alert_max_wait: Duration = Field(3600.0, gt=0, description="most time between two alert summaries while alerts keep coming")
    console_url: str = Field("", description="the console's address for links in summaries (default: http://status_host:status_port)")


class _Closer:
    """The task store as a lifecycle part: closed after everything that writes to it."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    async def start(self) -> None:
        """Nothing: the store connects on first use."""

    async def stop(self) -> None:
        await self.store.close()


class FlowApp(LifecycleApp):
    """Runs the workflows of ``workflows`` until stopped.

    Takes ownership of the consumers, producer, ledger and store it is given. ``clock`` is
    injectable so a test runs a simulated day; ``status_port`` serves the API and the web
    console (0: off). ``webhook`` receives every alert and sends summaries when each tick
    finds one due (build it with the app's clock when the clock is injected).
    """

    Settings: ClassVar[type[AppSettings]] = FlowSettings

    def __init__(
        self,
        *,
        workflows: WorkflowSet,
        consumer: Consumer,
        producer: Producer,
        store: TaskStore,
        ledger: Ledger | None = None,
        files_consumer: Consumer | None = None,
        failed_topic: str = "flow-failed",
        alert_topic: str = "flow-alerts",
        notifiers: Sequence[Notifier] = (),
        webhook: WebhookNotifier | None = None,
        task_ttl: float = 4 * 3600.0,
        retention: float = 30 * 86400.0,
        reload_every: float = 5.0,
        poll_interval: float = 1.0,
        fire_key_ttl: float = 86400.0,
        max_in_progress: int = 16,
        clock: Clock | None = None,
        owner: str = "",
        status_port: int = 0,
        status_host: str = "127.0.0.1",
    ) -> None:
        self._workflows = workflows
        self.consumer = consumer
        self.files_consumer = files_consumer
        self.producer = producer
        self._store = store
        self.memory_ledger = ledger is None
        self.ledger: Ledger = ledger if ledger is not None else MemoryLedger()
        self.clock: Clock = clock or SystemClock()
        self.retention = Retention(store, keep=retention, clock=self.clock)
        self.reload_every = reload_every
        self.poll_interval = poll_interval
        self.max_in_progress = max_in_progress
        self.sender = TaskSender(producer, self.ledger)
        self.webhook = webhook
        extra = [webhook] if webhook is not None else []
        alerts = Alerts(store, [TopicNotifier(producer, alert_topic), *notifiers, *extra],
                        clock=lambda: self.clock.now().timestamp())
        self._engine = FlowEngine(workflows, self.sender, ledger=self.ledger, store=store,
                                  alerts=alerts, clock=self.clock.now, failed_topic=failed_topic,
                                  task_ttl=task_ttl, key_ttl=fire_key_ttl, owner=owner)
        self._cron = CronPhases()
        self.api: FlowApiServer | None = None
        if status_port:
            self.api = FlowApiServer(self, host=status_host, port=status_port,
                                     metrics=stats_metrics("flow", self.stats))
        # the webhook stops first (reverse order): it sends what is pending while all is up
        parts: list[Part | None] = [_Closer(store), consumer, files_consumer, producer, self.api,
                                    webhook]
        self.lifecycle = Lifecycle("flow", self.stats, logger=logger, parts=parts,
                                   ledger=self.ledger)
        self._stopping = asyncio.Event()
        self._started = time.monotonic()
        self._last_reload = float("-inf")
        self._last_incomplete = float("-inf")
        self.counts = {"consumed": 0, "invalid": 0, "files": 0, "nacked": 0}
        info = consumer.info()
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "workflow": str(workflows.path), "bus": info.get("bus"), "topic": info.get("topic"),
            "channel": info.get("channel"),
            "files_topic": None if files_consumer is None else files_consumer.info().get("topic"),
            "ledger": "memory (no --ledger)" if ledger is None else type(ledger).__name__,
            "store": type(store).__name__, "failed_topic": failed_topic,
            "alert_topic": alert_topic, "task_ttl": format_duration(task_ttl),
            "retention": format_duration(retention), "status_port": status_port or None,
            # the host only: a Slack webhook's path is its secret
            "webhook": None if webhook is None else urlsplit(webhook.url).netloc,
        }

    # -- what the API reads (FlowView) --------------------------------------------------------

    @property
    def workflows(self) -> WorkflowSet:
        return self._workflows

    @property
    def cron(self) -> CronPhases:
        return self._cron

    @property
    def engine(self) -> FlowEngine:
        return self._engine

    @property
    def store(self) -> TaskStore:
        return self._store

    def now(self) -> datetime:
        return self.clock.now()

    def healthy(self) -> bool:
        return not self._stopping.is_set()

    async def refresh(self) -> list[str]:
        """Reload the workflow files now (``/refresh``, and when they change)."""
        # in the loop's thread: the engine reads the set between awaits, never during a reload
        changed = self._workflows.reload()
        self._cron.refresh(self._workflows.cron_phases(), self.clock.now())
        self._last_reload = self.clock.now().timestamp()
        if changed:
            logger.info("workflows reloaded: %s", ", ".join(changed))
        return changed

    # -- the app ------------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: AppSettings) -> FlowApp:
        """Build the app from ``FlowSettings``; no I/O but a look at the workflow path.

        Raises:
            ConfigError: no or a missing workflow path, a bad bus, ledger or store URL.
        """
        assert isinstance(settings, FlowSettings)
        if not settings.workflow:
            raise ConfigError("flow needs its workflows: --workflow PATH (a .toml file or a directory)")
        path = Path(settings.workflow)
        if not path.exists():
            raise ConfigError(f"--workflow {path}: no such file or directory")
        creds = settings.credentials()
        store_url = settings.store or settings.ledger or "memory:"
        if settings.alert_max_wait < settings.alert_min_wait:
            raise ConfigError(f"--alert-max-wait ({format_duration(settings.alert_max_wait)}) is "
                              f"less than --alert-min-wait ({format_duration(settings.alert_min_wait)}); "
                              "raise the max or lower the min")
        webhook = None
        if settings.webhook:
            if not settings.webhook.startswith(("http://", "https://")):
                raise ConfigError(f"--webhook {settings.webhook!r}: give an http:// or https:// URL")
            console = settings.console_url or (
                f"http://{settings.status_host}:{settings.status_port}" if settings.status_port else "")
            webhook = WebhookNotifier(settings.webhook, console_url=console,
                                      min_wait=settings.alert_min_wait,
                                      max_wait=settings.alert_max_wait)
        files = None
        if settings.files_topic:
            files = open_consumer(settings.bus, topic=settings.files_topic,
                                  channel=settings.channel, credentials=creds)
        app = cls(
            workflows=WorkflowSet(path),
            consumer=open_consumer(settings.bus, topic=settings.done_topic,
                                   channel=settings.channel, prefetch=settings.max_in_progress,
                                   credentials=creds),
            files_consumer=files,
            producer=open_producer(settings.producer_url, credentials=creds),
            ledger=open_ledger(settings.ledger) if settings.ledger else None,
            store=open_store(store_url),
            failed_topic=settings.failed_topic,
            alert_topic=settings.alert_topic,
            webhook=webhook,
            task_ttl=settings.task_ttl,
            retention=settings.retention,
            reload_every=settings.reload_every,
            poll_interval=settings.poll_interval,
            fire_key_ttl=settings.fire_key_ttl,
            max_in_progress=settings.max_in_progress,
            status_port=settings.status_port,
            status_host=settings.status_host,
        )
        app.startup.update(bus=settings.bus, out_bus=settings.out_bus, ledger=settings.ledger,
                           store=store_url)
        return app

    async def opened(self) -> None:
        """Load the workflows; say what is lost without a ledger."""
        await self.refresh()
        if not self._workflows.workflows():
            logger.error("no workflow loaded from %s: %s", self._workflows.path,
                         "; ".join(self._workflows.problems) or "no phases")
        if self.memory_ledger:
            logger.warning("no ledger configured: retries wait in memory and are lost on "
                           "restart, replicas do not share work; set --ledger sqlite:PATH")

    async def stop(self) -> None:
        """Stop reading and ticking; ``run()`` returns. Idempotent."""
        self._stopping.set()
        await self.consumer.stop()
        if self.files_consumer is not None:
            await self.files_consumer.stop()

    async def work(self) -> int:
        """Read done tasks and files and tick cron phases and retries until stopped."""
        readers = [asyncio.create_task(self._read_done())]
        if self.files_consumer is not None:
            readers.append(asyncio.create_task(self._read_files(self.files_consumer)))
        cleaner = asyncio.create_task(self.retention.run())
        try:
            await self._tick_loop()
        finally:
            self._stopping.set()
            await self.retention.stop()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, cleaner, return_exceptions=True)
        return 0

    async def _read_done(self) -> None:
        """Handle up to ``max_in_progress`` done tasks at once (each waits on the ledger,
        the store and the bus, not on the CPU); those under way finish before it returns."""
        slots = asyncio.Semaphore(self.max_in_progress)
        running: set[asyncio.Task[None]] = set()

        def finished(job: asyncio.Task[None]) -> None:
            running.discard(job)
            slots.release()

        try:
            while (message := await self.consumer.msg()) is not None:
                await slots.acquire()
                job = asyncio.create_task(self.handle_done(message))
                running.add(job)
                job.add_done_callback(finished)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if not self._stopping.is_set():
            logger.warning("the done topic finished (a file bus without ?follow=1?): no more "
                           "children or retries start; cron phases go on")

    async def handle_done(self, message: Message) -> None:
        """One done-topic message: act on it, then ack; nack when the bus or ledger failed,
        so what it starts is not lost."""
        done = await read_done(message, self.counts, logger)
        if done is None:
            return
        try:
            await self._engine.handle_done(done)
        except (BusError, LedgerError) as err:
            self.counts["nacked"] += 1
            logger.error("task %s (%s): %s; it comes back in %s", done.id, done.type, err,
                         format_duration(NACK_DELAY))
            await message.nack(NACK_DELAY)
            return
        await message.ack()

    async def _read_files(self, consumer: Consumer) -> None:
        while (message := await consumer.msg()) is not None:
            await self.handle_file(message)

    async def handle_file(self, message: Message) -> None:
        """One file-topic message: start the phases its path matches, then ack."""
        self.counts["files"] += 1
        try:
            stats = parse_stats(message.body)
        except ValueError as err:
            self.counts["invalid"] += 1
            logger.warning("not file stats on the files topic, skipped: %s", err)
            await message.ack()
            return
        try:
            await self._engine.file_landed(stats)
        except (BusError, LedgerError) as err:
            self.counts["nacked"] += 1
            logger.error("file %s: %s; it comes back in %s", stats.path, err,
                         format_duration(NACK_DELAY))
            await message.nack(NACK_DELAY)
            return
        await message.ack()

    async def tick(self) -> None:
        """One round: reload changed workflows, fire due cron ticks, send due retries, look
        for incomplete tasks (the store's daily clean-up runs beside, ``Retention``). Tests
        call it after moving the clock."""
        if self.clock.now().timestamp() - self._last_reload >= self.reload_every:
            self._last_reload = self.clock.now().timestamp()
            if self._workflows.changed():  # a few stat calls
                await self.refresh()
        for phase, at in self._cron.pop_due(self.clock.now()):
            try:
                await self._engine.fire(phase, at)
            except (BusError, LedgerError) as err:
                logger.error("cron phase %s of %s at %s not sent: %s", phase.key,
                             phase.workflow, at.isoformat(), err)
        await self._engine.release_due()
        now = self.clock.now().timestamp()
        if now - self._last_incomplete >= INCOMPLETE_EVERY:
            self._last_incomplete = now
            await self._engine.check_incomplete()
        if self.webhook is not None:
            self.webhook.poke()  # sends in the background once the summary is due

    async def _tick_loop(self) -> None:
        while not self._stopping.is_set():
            await self.tick()
            wait = self.poll_interval
            upcoming = self._cron.next_at()
            if upcoming is not None:
                wait = min(wait, max((upcoming - self.clock.now()).total_seconds(), 0.0))
            await wait_or_stop(self._stopping, wait, self.clock.sleep)

    def stats(self) -> dict[str, object]:
        """Counters for ``/stats``."""
        upcoming = self._cron.next_at()
        return {
            "app": "flow",
            "runtime": round(time.monotonic() - self._started, 3),
            **self.counts,
            **self._engine.stats(),
            **self.sender.stats(),
            "workflows": len(self._workflows.workflows()),
            "problems": len(self._workflows.problems),
            "cron_missed": self._cron.missed,
            "store_cleaned": self.retention.removed,
            "store_clean_error": self.retention.last_error,
            "next_cron": None if upcoming is None else upcoming.isoformat(),
            "consumer": self.consumer.info(),
            **(self.webhook.stats() if self.webhook is not None else {}),
        }
