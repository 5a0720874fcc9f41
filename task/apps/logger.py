"""``taskbus logger``: archive a topic to hourly JSON-lines files.

Every message of the topic (``done`` by default) is appended as one line to
``DIR/<topic>/yyyy/mm/dd/hh.jsonl`` (the ``template`` setting, a time template rendered with
the time the message was received, in UTC) and acknowledged only once the line is flushed to
the file (and, with ``fsync``, to the disk), so a crash loses nothing the bus gave up.
Bodies are written byte for byte, whatever they hold; the archive is for audits and replays
(a file bus reads it back). The one exception: a body with a line break inside would break
the one-line-per-message rule, so it is written as compact JSON, or as a JSON string when it
is not JSON, and counted as ``rewritten``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

from pydantic import Field

from task import timetemplate
from task.apps.lifecycle import Lifecycle, LifecycleApp
from task.bus.base import Consumer, Message
from task.bus.registry import open_consumer
from task.errors import BusError, ConfigError
from task.settings import AppSettings, BusSettings

__all__ = ["DEFAULT_TEMPLATE", "LoggerApp", "LoggerSettings"]

logger = logging.getLogger(__name__)

#: Where a message goes under ``dir``: one file per topic and hour.
DEFAULT_TEMPLATE = "{topic}/{yyyy}/{mm}/{dd}/{hh}.jsonl"
#: Seconds before a message that could not be written is delivered again.
WRITE_RETRY_DELAY = 1.0


class LoggerSettings(BusSettings):
    """``taskbus logger``: archive a topic to rotating hourly files."""

    topic: str = Field("done", description="topic to archive")
    channel: str = Field("logger", description="channel / consumer group on the topic")
    dir: str = Field("./taskbus-archive", description="directory the archive is written under")
    template: str = Field(DEFAULT_TEMPLATE, description="file path under dir, a time template with {topic}")
    fsync: bool = Field(False, description="fsync each line before acknowledging (slower, survives power loss)")


class LoggerApp(LifecycleApp):
    """Appends each message of ``consumer`` to the hour's file under ``directory``.

    ``clock`` (aware datetimes) is injectable for tests; the app starts and stops the
    consumer it is given.
    """

    Settings: ClassVar[type[AppSettings]] = LoggerSettings

    def __init__(
        self,
        *,
        consumer: Consumer,
        directory: str | Path,
        topic: str = "done",
        template: str = DEFAULT_TEMPLATE,
        fsync: bool = False,
        status_port: int = 0,
        status_host: str = "127.0.0.1",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        unknown = timetemplate.unknown_placeholders(template.replace("{topic}", ""))
        if unknown:
            raise ConfigError(f"logger template {template!r} has unknown placeholder {unknown[0]}; "
                              "use {topic} and the time placeholders ({yyyy}, {mm}, {dd}, {hh}, ...)")
        self.consumer = consumer
        self.directory = Path(directory)
        self.topic = topic
        self.template = template.replace("{topic}", topic.replace("/", "_").replace("..", "_"))
        self.fsync = fsync
        self.clock = clock
        self.lifecycle = Lifecycle("logger", self.stats, logger=logger, parts=[consumer],
                                   status_host=status_host, status_port=status_port)
        self._path: Path | None = None
        self._file: BinaryIO | None = None
        self._started = time.monotonic()
        self.counts = {k: 0 for k in ("archived", "bytes", "rewritten", "empty", "write_errors",
                                      "ack_errors", "files")}
        info = consumer.info()
        #: what the start-up log line names; ``from_settings`` puts the URLs in
        self.startup: dict[str, object] = {
            "bus": info.get("bus"), "topic": topic, "channel": info.get("channel"),
            "status_port": status_port or None, "dir": str(self.directory),
            "template": template, "fsync": fsync or None,
        }

    @classmethod
    def from_settings(cls, settings: AppSettings) -> LoggerApp:
        """Build the app from ``LoggerSettings``; no I/O.

        Raises:
            ConfigError: a bad bus URL or template.
        """
        assert isinstance(settings, LoggerSettings)
        consumer = open_consumer(settings.bus, topic=settings.topic, channel=settings.channel,
                                 credentials=settings.credentials())
        app = cls(consumer=consumer, directory=settings.dir, topic=settings.topic,
                  template=settings.template, fsync=settings.fsync,
                  status_port=settings.status_port, status_host=settings.status_host)
        app.startup.update(bus=settings.bus, channel=settings.channel)
        return app

    async def closing(self) -> None:
        """Close the archive file."""
        self._close_file()

    async def work(self) -> int:
        """Archive messages until the topic is finished or the app is stopped."""
        while (message := await self.consumer.msg()) is not None:
            try:
                await self.handle(message)
            except BusError as err:  # ack failed: the bus redelivers, the line is written twice
                self.counts["ack_errors"] += 1
                logger.error("acknowledging an archived message failed: %s", err)
        return 0

    async def stop(self) -> None:
        """Stop consuming; ``run()`` closes the file and returns. Idempotent."""
        await self.consumer.stop()

    async def handle(self, message: Message) -> None:
        """Write one message and ack it; on a write error nack it so the bus brings it back."""
        line = self._line(message.body)
        if line is None:
            self.counts["empty"] += 1
            await message.ack()
            return
        try:
            await self._write(line)
        except OSError as err:
            self.counts["write_errors"] += 1
            logger.error("cannot archive to %s, the message comes back later: %s", self._path, err)
            self._close_file()
            await message.nack(WRITE_RETRY_DELAY)
            return
        self.counts["archived"] += 1
        self.counts["bytes"] += len(line)
        await message.ack()

    def stats(self) -> dict[str, object]:
        """Counters for the status endpoint."""
        return {
            "app": "logger",
            "runtime_s": round(time.monotonic() - self._started, 3),
            **self.counts,
            "file": str(self._path or ""),
            "consumer": self.consumer.info(),
        }

    def _line(self, body: bytes) -> bytes | None:
        body = body.rstrip(b"\r\n")
        if not body:
            return None
        if b"\n" in body or b"\r" in body:
            self.counts["rewritten"] += 1
            text = body.decode("utf-8", "replace")
            try:
                body = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")).encode()
            except ValueError:
                body = json.dumps(text, ensure_ascii=False).encode()
        return body + b"\n"

    async def _write(self, line: bytes) -> None:
        path = self.directory / timetemplate.render(self.template, self.clock().astimezone(UTC))
        if path != self._path or self._file is None:
            self._close_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("ab")
            self._path = path
            self.counts["files"] += 1
            logger.info("archiving %r to %s", self.topic, path)
        self._file.write(line)
        self._file.flush()
        if self.fsync:
            await asyncio.to_thread(os.fsync, self._file.fileno())

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as err:
                logger.error("closing %s failed: %s", self._path, err)
            self._file = None
