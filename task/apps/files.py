"""``taskbus files``: a task for every new file that matches a rule.

Rules name a directory, a glob pattern (matched from the right against the path under the
directory, so ``*.csv`` matches at any depth), the task type, an info template and a topic.
Directories are watched with watchfiles (inotify and friends; ``polling`` for network
filesystems and containers where events do not arrive). A file counts once its size and
modification time have not changed for ``settle`` seconds, so a file still being written is
not handed to a worker half done. A rule may group files: every ``group`` files, or every
window of the cron expression ``group_cron``, make one task whose info lists them. A
``group_cron`` reads as a cron rule does (``task.apps.schedule``: 5 fields, 6 with seconds
first as in Go's cron, or a descriptor such as ``@hourly``), in UTC.

Info templates are time templates (``task.timetemplate``) rendered with the file's time (the
one its path names, ``…/2024/01/31/05/…``, or else its modification time, in UTC) plus
``{path}`` (for a group: the paths joined by ``,``), ``{name}`` and ``{dir}`` (the directory
holding the file or, for a group, the files); Go's ``{SRC_FILE}`` is an alias of ``{path}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task import timetemplate
from task.apps.lifecycle import Lifecycle, LifecycleApp
from task.apps.schedule import CronSchedule, is_valid_cron, zone
from task.apps.sender import TaskSender
from task.bus.base import Producer
from task.bus.registry import open_producer
from task.duration import Duration, format_duration
from task.errors import BusError, ConfigError, MissingExtraError
from task.ledger.base import Ledger
from task.ledger.registry import open_ledger
from task.settings import AppSettings, BusSettings
from task.task import Task

__all__ = ["FileRule", "FilesApp", "FilesSettings"]

logger = logging.getLogger(__name__)

_FILE_FIELDS = re.compile(r"\{(path|name|dir|src_file)\}", re.IGNORECASE)


class FileRule(BaseModel):
    """Which files make which tasks. On the command line one string of ``key=value`` words:
    ``"dir=./in pattern=*.csv type=load info='{path}?day={yyyy}-{mm}-{dd}'"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str = Field(min_length=1, description="directory watched (with its subdirectories)")
    pattern: str = Field("*", min_length=1, description="glob the path under dir must match")
    type: str = Field(min_length=1, description="task type")
    info: str = Field("{path}", description="info template: time placeholders, {path}, {name}, {dir}")
    topic: str = Field("", description="topic (default: the task type)")
    group: int = Field(0, ge=0, description="one task per this many files (0: one per file)")
    group_cron: str = Field(
        "", description="one task per window of this cron expression (as cron's rules, in UTC)"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        words = shlex.split(value)
        loose = [word for word in words if "=" not in word]
        if loose:
            raise ValueError(f"{loose[0]!r} in rule {value!r} is not key=value")
        return dict(word.split("=", 1) for word in words)

    @field_validator("info")
    @classmethod
    def _known_placeholders(cls, info: str) -> str:
        unknown = timetemplate.unknown_placeholders(_FILE_FIELDS.sub("", info))
        if unknown:
            raise ValueError(f"unknown placeholder {unknown[0]} in info {info!r}")
        return info

    def __str__(self) -> str:
        """The rule as its command-line string (fields left at their default omitted)."""
        values = self.model_dump(exclude_defaults=True)
        return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items())

    def matches(self, path: str) -> bool:
        """True when ``path`` lies under ``dir`` and matches ``pattern``."""
        rel = os.path.relpath(path, os.path.abspath(self.dir))
        return not rel.startswith(os.pardir) and PurePath(rel).match(self.pattern)

    def info_for(self, paths: Sequence[str], at: datetime) -> str:
        """The info of a task for ``paths`` (one file, or a group) whose time is ``at``."""
        folder = os.path.commonpath([os.path.dirname(p) for p in paths])
        fields = {"path": ",".join(paths), "src_file": ",".join(paths),
                  "name": os.path.basename(paths[0]), "dir": folder}
        rendered = timetemplate.render(self.info, at)
        return _FILE_FIELDS.sub(lambda m: fields[m.group(1).lower()], rendered)


class FilesSettings(BusSettings):
    """``taskbus files``: create a task per new file."""

    rule: list[FileRule] = Field(default_factory=list, description="file rules, TOML [[rule]] tables or key=value strings")
    settle: Duration = Field(1.0, gt=0, description="how long a file's size must stay unchanged before it counts (1s, 500ms; plain numbers are seconds)")
    polling: bool = Field(False, description="poll the directories instead of using file system events")
    poll_interval: Duration = Field(0.3, gt=0, description="time between polls when polling (300ms, 2s; plain numbers are seconds)")
    existing: bool = Field(False, description="also create tasks for files already there at start")


class FilesApp(LifecycleApp):
    """Watches the rules' directories and sends a task per settled new file (or group).

    The app starts and stops the producer it is given and closes its ledger. ``clock``
    (monotonic seconds, for settling) and ``now`` (aware datetimes, for cron windows) are
    injectable for tests.
    """

    Settings: ClassVar[type[AppSettings]] = FilesSettings

    def __init__(
        self,
        *,
        producer: Producer,
        rules: Sequence[FileRule],
        ledger: Ledger | None = None,
        settle: float = 1.0,
        polling: bool = False,
        poll_interval: float = 0.3,
        existing: bool = False,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not rules:
            raise ConfigError("files needs at least one rule; add --rule 'dir=./in pattern=*.csv type=T'")
        self.producer = producer
        self.rules = list(rules)
        self.ledger = ledger
        self.settle = settle
        self.polling = polling
        self.poll_interval = poll_interval
        self.existing = existing
        self.clock = clock
        self.now = now
        for rule in self.rules:
            if rule.group_cron and not is_valid_cron(rule.group_cron):
                raise ConfigError(f"group_cron {rule.group_cron!r} is not a cron expression "
                                  "(e.g. '*/15 * * * *', or 6 fields with seconds first)")
        #: the window schedule of each rule with a group_cron, made at the first tick
        self._windows: dict[int, CronSchedule] = {}
        #: files not yet settled: path -> (size, mtime_ns, monotonic time of the last change)
        self._pending: dict[str, tuple[int, int, float]] = {}
        self._groups: dict[int, list[tuple[str, datetime]]] = {i: [] for i in range(len(self.rules))}
        #: tasks made and not sent yet: (topic, task, how many files it names)
        self._outbox: deque[tuple[str, Task, int]] = deque()
        self._stop = asyncio.Event()
        #: set once the directories are watched: files written from then on are seen
        self.watching = asyncio.Event()
        self._started = time.monotonic()
        self.sender = TaskSender(producer, ledger)
        self.lifecycle = Lifecycle("files", self.stats, logger=logger, parts=[producer],
                                   ledger=ledger, status_host=status_host,
                                   status_port=status_port)
        self.counts = {k: 0 for k in ("files", "tasks", "send_errors")}
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "bus": producer.info().get("bus"),
            "ledger": "" if ledger is None else type(ledger).__name__,
            "status_port": status_port or None, "settle": format_duration(settle),
            "polling": format_duration(poll_interval) if polling else None,
            "existing": existing or None, "rules": "; ".join(map(str, self.rules)),
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> FilesApp:
        """Build the app from ``FilesSettings``; no I/O.

        Raises:
            ConfigError: no rules, a bad cron expression, bus or ledger URL.
        """
        assert isinstance(settings, FilesSettings)
        app = cls(
            producer=open_producer(settings.producer_url, credentials=settings.credentials()),
            rules=settings.rule, ledger=open_ledger(settings.ledger) if settings.ledger else None,
            settle=settings.settle, polling=settings.polling, poll_interval=settings.poll_interval,
            existing=settings.existing, status_port=settings.status_port,
            status_host=settings.status_host,
        )
        app.startup.update(bus=settings.producer_url, ledger=settings.ledger)
        return app

    async def __aenter__(self) -> Self:
        """Check the watched directories exist, then open.

        Raises:
            ConfigError: a watched directory does not exist.
        """
        for rule in self.rules:
            if not os.path.isdir(rule.dir):
                raise ConfigError(f"watched directory {rule.dir!r} does not exist; create it or fix the rule")
        return await super().__aenter__()

    async def closing(self) -> None:
        """Send the partial groups and whatever is still unsent."""
        for index, files in self._groups.items():
            if files:
                logger.info("sending the partial group of %d files of rule %d on shutdown", len(files), index)
                self._make(self.rules[index], files)
        await self._send_outbox()
        if self._outbox:
            logger.error("%d tasks could not be sent before shutdown%s", len(self._outbox),
                         "; the ledger holds them for recover" if self.ledger else " and are lost")

    async def work(self) -> int:
        """Watch until stopped, creating tasks as files settle.

        Raises:
            MissingExtraError: watchfiles is not installed.
        """
        if self.existing:
            for rule in self.rules:
                for folder, _, names in os.walk(os.path.abspath(rule.dir)):
                    self._seen([os.path.join(folder, n) for n in names])
        async for added in self._watch():
            self.watching.set()
            self._seen(added)
            await self.tick()
        return 0

    async def stop(self) -> None:
        """Stop watching; ``run()`` sends what it holds and returns. Idempotent."""
        self._stop.set()

    async def tick(self) -> None:
        """Hand on settled files, close due cron windows, send what waits to be sent."""
        moment = self.clock()
        for path, (size, mtime, since) in list(self._pending.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self._pending[path]  # gone before it settled
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self._pending[path] = (st.st_size, st.st_mtime_ns, moment)
            elif moment - since >= self.settle:
                del self._pending[path]
                self._settled(path, st.st_mtime)
        wall = self.now()
        for index, rule in enumerate(self.rules):
            if not rule.group_cron:
                continue
            window = self._windows.get(index)
            if window is None:
                window = self._windows[index] = CronSchedule(rule.group_cron, zone("UTC"), wall)
                self._log_window(index)
            if window.pop_due(wall):  # one task for the files, however many windows passed
                if self._groups[index]:
                    self._make(rule, self._groups[index])
                    self._groups[index] = []
                self._log_window(index)
        await self._send_outbox()

    def stats(self) -> dict[str, object]:
        """Counters for the status endpoint."""
        return {
            "app": "files",
            "runtime_s": round(time.monotonic() - self._started, 3),
            **self.counts,
            "settling": len(self._pending),
            "grouped": sum(map(len, self._groups.values())),
            "unsent": len(self._outbox),
            **self.sender.stats(),
        }

    def _log_window(self, index: int) -> None:
        rule = self.rules[index]
        logger.info("rule %d (%s): next group of files sent at %s", index + 1, rule.type,
                    self._windows[index].next_at.isoformat())

    def _seen(self, paths: Sequence[str]) -> None:
        moment = self.clock()
        for path in paths:
            if path in self._pending or not any(rule.matches(path) for rule in self.rules):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone already
            if stat.S_ISREG(st.st_mode):
                self._pending[path] = (st.st_size, st.st_mtime_ns, moment)

    def _settled(self, path: str, mtime: float) -> None:
        self.counts["files"] += 1
        at = timetemplate.extract_time(path) or datetime.fromtimestamp(mtime, UTC)
        for index, rule in enumerate(self.rules):
            if not rule.matches(path):
                continue
            if not (rule.group > 1 or rule.group_cron):
                self._make(rule, [(path, at)])
                continue
            group = self._groups[index]
            group.append((path, at))
            if rule.group > 1 and len(group) >= rule.group:
                self._make(rule, group)
                self._groups[index] = []

    def _make(self, rule: FileRule, files: list[tuple[str, datetime]]) -> None:
        files = sorted(files)
        task = Task.new(rule.type, rule.info_for([p for p, _ in files], files[0][1]))
        self.counts["tasks"] += 1
        self._outbox.append((rule.topic or rule.type, task, len(files)))

    async def _send_outbox(self) -> None:
        while self._outbox:
            topic, task, files = self._outbox[0]
            try:
                await self.sender.send(task, topic)
            except BusError as err:
                self.counts["send_errors"] += 1
                logger.error("cannot send task %s to %r, trying again: %s", task.id, topic, err)
                return
            self._outbox.popleft()
            logger.info("sent task %s (%s) for %d file%s to %r: %s", task.id, task.type, files,
                        "" if files == 1 else "s", topic, _shorten(task.info))

    async def _watch(self) -> AsyncIterator[list[str]]:
        """Paths added in the watched directories, and an empty list at every tick."""
        try:
            from watchfiles import Change, awatch
        except ModuleNotFoundError as err:
            raise MissingExtraError("taskbus files needs watchfiles: pip install 'taskbus[apps]'") from err
        tick = max(20, min(250, int(self.settle * 250)))
        dirs = sorted({os.path.abspath(rule.dir) for rule in self.rules})
        async for changes in awatch(
            *dirs, watch_filter=None, stop_event=self._stop, debounce=tick, step=min(50, tick),
            rust_timeout=tick, yield_on_timeout=True, force_polling=self.polling,
            poll_delay_ms=int(self.poll_interval * 1000),
        ):
            yield [path for change, path in changes if change != Change.deleted]


def _shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a log line (a group's info lists every path)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

