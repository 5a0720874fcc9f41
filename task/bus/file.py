"""The file bus: one JSON object per line, in local files. For development and pipelines.

``file:PATH`` where PATH is a directory: the consumer reads ``DIR/<topic>.jsonl`` and the
producer appends ``DIR/<topic>.jsonl``. PATH a file: the consumer reads it and the producer
appends beside it (``<dir of PATH>/<topic>.jsonl``). ``file:-``: stdin and stdout.

A consumer resumes by default: it keeps the byte offset up to which every line is
acknowledged in ``<file>.<channel>.offset``, written after each ack, so a re-run (or a killed
worker) starts at the first unfinished line instead of doing everything again, and readers
of one file on different channels (a worker, ``retry``, ``recap``, ``logger``) each see every
line. ``?offset=0`` reads from the beginning and keeps no offset; ``file:-`` keeps none.

The directory must exist for a consumer (a missing one is a mistaken URL, not an empty
bus); a missing ``<topic>.jsonl`` in it is fine: nothing to read yet. The producer creates
both, since sending is what makes a bus.

Options: ``?follow=1`` tails a growing file (and survives truncation and rotation) instead
of finishing at its end; ``?offset=0`` (see above; ``1``, the default, is accepted);
``?poll=200ms`` is how often a followed file is checked. ``nack`` gives a line back to this
consumer (after its delay).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections import deque
from pathlib import Path

from task.bus.base import BusInfo, BusPart
from task.bus.registry import Credentials
from task.bus.url import parse_url
from task.errors import BusClosedError, BusError, ConfigError

__all__ = ["FileConsumer", "FileMessage", "FileOptions", "FileProducer", "offset_file"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".txt", ".log")
#: what a channel may keep in an offset file's name; anything else becomes ``_``
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def offset_file(path: Path, channel: str) -> Path:
    """``<file>.<channel>.offset``: one per reader, so readers on different channels never
    take each other's lines. The channel is reduced to letters, digits, ``-`` and ``_``."""
    return path.with_name(f"{path.name}.{_UNSAFE.sub('_', channel)}.offset")


class FileOptions:
    """What a ``file:`` URL says: where, and whether to follow and keep an offset (the default)."""

    def __init__(self, path: str, *, follow: bool = False, offset: bool = True, poll: float = 0.2) -> None:
        self.path = path
        self.follow = follow
        self.offset = offset
        self.poll = poll

    @classmethod
    def from_url(cls, url: str) -> FileOptions:
        """Raises: ConfigError: an unknown or malformed option, or no path."""
        parsed = parse_url(url)
        parsed.check_options(("follow", "offset", "poll"))
        path = parsed.path if url.startswith("file://") else url[len("file:"):].partition("?")[0]
        if not path:
            raise ConfigError(f"file bus URL {url!r} has no path; use file:./dir/, file:/abs/file.jsonl or file:-")
        return cls(
            path,
            follow=parsed.boolean("follow", False),
            offset=parsed.boolean("offset", True),
            poll=parsed.duration("poll", 0.2),
        )

    def is_dir(self) -> bool:
        """A directory unless it is an existing file or looks like one (has a file suffix)."""
        p = Path(self.path)
        if p.is_dir() or self.path.endswith(("/", os.sep)):
            return True
        if p.is_file():
            return False
        return not p.suffix or p.suffix not in _FILE_SUFFIXES

    def topic_file(self, topic: str) -> Path:
        """Where ``topic`` lives: ``DIR/<topic>.jsonl``, or beside a file path."""
        base = Path(self.path) if self.is_dir() else Path(self.path).parent
        return base / f"{topic}.jsonl"


class FileMessage:
    """One line. ``ack`` moves the saved offset once every earlier line is acknowledged."""

    __slots__ = ("_consumer", "_settled", "attempt", "body", "end")

    def __init__(self, consumer: FileConsumer, body: bytes, end: int, attempt: int = 1) -> None:
        self.body = body
        self.attempt = attempt
        self.end = end
        self._consumer = consumer
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._consumer._acked(self)

    async def nack(self, delay: float = 0) -> None:
        """Give the line back to this consumer after ``delay`` seconds (attempt + 1)."""
        if not self._settled:
            self._settled = True
            self._consumer._requeue(self, delay)

    async def in_progress(self) -> None:
        """Nothing to extend: a file has no lease."""


class FileConsumer(BusPart):
    """Reads lines of a file (or stdin) as messages."""

    def __init__(self, options: FileOptions, topic: str, channel: str = "", prefetch: int = 1) -> None:
        self.options = options
        self.topic = topic
        self.channel = channel or topic
        self.prefetch = prefetch
        if options.path == "-":
            self.path: Path | None = None
        elif options.is_dir():
            self.path = options.topic_file(topic)
        else:
            self.path = Path(options.path)
        self._fd: int | None = None
        self._inode: int | None = None
        self._position = 0  # bytes of the file consumed into lines or the buffer
        self._buffer = b""
        self._lines: deque[tuple[bytes, int]] = deque()
        self._pending: deque[FileMessage] = deque()  # handed out, in file order
        self._retry: deque[FileMessage] = deque()
        self._retry_wait: asyncio.Future[None] | None = None
        self._delayed = 0
        self._offset_fd: int | None = None
        self._committed = 0
        self._eof = False
        self._stopped = False
        self._received = 0
        self._wake: asyncio.Event | None = None

    @property
    def offset_path(self) -> Path | None:
        """This reader's ``<file>.<channel>.offset``; None for stdin or with ``?offset=0``."""
        if self.path is None or not self.options.offset:
            return None
        return offset_file(self.path, self.channel)

    async def start(self) -> None:
        """Check the directory and load this reader's saved offset. Idempotent.

        Raises:
            ConfigError: the bus directory does not exist (a mistaken URL; create it or fix it).
            BusError: the offset file cannot be opened.
        """
        if self._wake is not None:
            return
        if self.path is not None and not self.path.parent.is_dir():
            raise ConfigError(
                f"file bus directory {self.path.parent} does not exist: nothing can be read from "
                f"{self.path}; create it (mkdir -p {self.path.parent}) or check the bus URL (--bus)"
            )
        self._wake = asyncio.Event()
        if self.offset_path is not None:
            self._open_offset(self.offset_path)

    def _open_offset(self, path: Path) -> None:
        assert self.path is not None
        fresh = not path.exists()
        try:
            self._offset_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise BusError(f"cannot open the offset file {path}: {err}") from err
        legacy = self.path.with_name(self.path.name + ".offset")
        if fresh and legacy.is_file():
            # Before each reader had its own file, ``?offset=1`` kept one per file. It is not
            # adopted: which reader wrote it is unknown, and a new reader must see every line.
            logger.warning(
                "found the old shared offset file %s, which is no longer read; channel %r keeps "
                "its own offset in %s and starts from the beginning of %s. To resume where the "
                "old file says instead, stop this reader and run: cp %s %s", legacy, self.channel,
                path, self.path.name, legacy, path,
            )
        saved = os.pread(self._offset_fd, 64, 0).strip(b"\0 \n")
        try:
            self._committed = int(saved) if saved else 0
        except ValueError:
            logger.warning("ignoring unreadable offset file %s", path)
            self._committed = 0

    def _open(self) -> bool:
        """Open the file once it exists; resume from the committed offset."""
        if self.path is None:
            self._fd = sys.stdin.fileno()
            return True
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise BusError(f"cannot read {self.path}: {err}") from err
        stat = os.fstat(self._fd)
        self._inode = stat.st_ino
        start = self._committed if self._committed <= stat.st_size else 0
        if start != self._committed:
            logger.warning("%s is shorter than its saved offset %d: reading from the start", self.path, self._committed)
            self._committed = 0
        self._position = start
        return True

    def _read_chunk(self) -> bytes:
        assert self._fd is not None
        if self.path is None:
            return os.read(self._fd, _CHUNK)
        data = os.pread(self._fd, _CHUNK, self._position)
        return data

    def _split(self, data: bytes) -> None:
        start = self._position - len(self._buffer)
        self._position += len(data)
        buffer = self._buffer + data if self._buffer else data
        begin = 0
        while True:
            newline = buffer.find(b"\n", begin)
            if newline < 0:
                break
            line = buffer[begin:newline]
            if line.strip():
                self._lines.append((line.rstrip(b"\r"), start + newline + 1))
            else:
                self._lines.append((b"", start + newline + 1))  # keeps offsets moving
            begin = newline + 1
        self._buffer = buffer[begin:]

    async def _fill(self) -> bool:
        """Read more lines; False when there is nothing more (end of a non-followed file)."""
        while not self._stopped:
            if self._fd is None and not self._open():
                if not self.options.follow:
                    logger.warning("%s does not exist: nothing to read", self.path)
                    return False
                await self._sleep(self.options.poll)
                continue
            if self.path is None:
                data = await asyncio.get_running_loop().run_in_executor(None, self._read_chunk)
            else:
                data = self._read_chunk()
            if data:
                self._split(data)
                return True
            if not self.options.follow:
                if self._buffer.strip():  # last line without a newline
                    self._lines.append((self._buffer, self._position))
                    self._buffer = b""
                    return True
                return False
            if self._rotated():
                continue
            await self._sleep(self.options.poll)
        return False

    def _rotated(self) -> bool:
        """A followed file truncated or replaced: start reading it from the beginning."""
        assert self.path is not None and self._fd is not None
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False
        if stat.st_ino != self._inode or stat.st_size < self._position:
            logger.info("%s was rotated or truncated: reading it from the start", self.path)
            os.close(self._fd)
            self._fd = None
            self._committed = 0
            self._buffer = b""
            self._open()
            self._position = 0
            return True
        return False

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def msg(self) -> FileMessage | None:
        """The next line; None at the end of a non-followed file or after ``stop()``."""
        await self.start()
        while not self._stopped:
            if self._retry:
                return self._retry.popleft()
            if not self._lines and not self._eof:
                self._eof = not await self._fill()
                continue
            if self._lines:
                body, end = self._lines.popleft()
                message = FileMessage(self, body, end)
                self._pending.append(message)
                if not body:
                    await message.ack()
                    continue
                self._received += 1
                return message
            if self._delayed:  # wait for nacked lines to come back
                self._retry_wait = asyncio.get_running_loop().create_future()
                await self._retry_wait
                continue
            return None
        return None

    def _requeue(self, message: FileMessage, delay: float) -> None:
        again = FileMessage(self, message.body, message.end, message.attempt + 1)
        self._pending[self._pending.index(message)] = again
        self._delayed += 1

        def back() -> None:
            self._delayed -= 1
            self._retry.append(again)
            if self._retry_wait is not None and not self._retry_wait.done():
                self._retry_wait.set_result(None)
            if self._wake is not None:
                self._wake.set()

        if delay > 0:
            asyncio.get_running_loop().call_later(delay, back)
        else:
            back()

    def _acked(self, message: FileMessage) -> None:
        pending = self._pending
        moved = False
        while pending and pending[0]._settled:
            self._committed = pending.popleft().end
            moved = True
        if moved and self._offset_fd is not None:
            os.pwrite(self._offset_fd, f"{self._committed:<20d}\n".encode(), 0)
            if self._stopped and not pending:
                self._close_offset()

    def _close_offset(self) -> None:
        if self._offset_fd is not None:
            os.close(self._offset_fd)
            self._offset_fd = None

    async def stop(self) -> None:
        """Stop reading; unacknowledged lines stay after the saved offset. Idempotent.

        Messages handed out before still ack after stop() (the Launcher finishes in-flight
        tasks), so the offset file stays open until the last of them is settled."""
        self._stopped = True
        if self._wake is not None:
            self._wake.set()
        if self._retry_wait is not None and not self._retry_wait.done():
            self._retry_wait.set_result(None)
        if self._fd is not None and self.path is not None:
            os.close(self._fd)
        self._fd = None
        if not self._pending:
            self._close_offset()

    def info(self) -> BusInfo:
        return {
            "bus": "file",
            "path": str(self.path or "-"),
            "topic": self.topic,
            "channel": self.channel,
            "received": self._received,
            "offset": self._committed,
        }


class FileProducer(BusPart):
    """Appends one line per message to ``<topic>.jsonl`` (or stdout for ``file:-``)."""

    def __init__(self, options: FileOptions) -> None:
        self.options = options
        self._fds: dict[str, int] = {}
        self._stopped = False
        self._sent = 0

    def _fd_for(self, topic: str) -> int:
        fd = self._fds.get(topic)
        if fd is None:
            if self.options.path == "-":
                fd = sys.stdout.fileno()
            else:
                path = self.options.topic_file(topic)
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                except OSError as err:
                    raise BusError(f"cannot open {path} for writing: {err}") from err
            self._fds[topic] = fd
        return fd

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        """Append ``body`` and a newline in one write, so concurrent writers do not interleave.

        Raises:
            BusError: ``body`` holds a newline (it would become two messages), or a write failed.
            BusClosedError: after ``stop()``.
        """
        if self._stopped:
            raise BusClosedError("file producer used after stop()")
        if b"\n" in body:
            raise BusError("the file bus carries one message per line: this body contains a newline")
        if not topic or "/" in topic or topic.startswith("."):
            raise BusError(f"topic {topic!r} cannot name a file; use letters, digits, - and _")
        data = memoryview(body + b"\n")
        fd = self._fd_for(topic)
        try:
            while data:
                written = os.write(fd, data)
                data = data[written:]
        except OSError as err:
            raise BusError(f"cannot append to the {topic!r} file: {err}") from err
        self._sent += 1

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for fd in self._fds.values():
            if self.options.path != "-":
                os.close(fd)
            else:
                sys.stdout.flush()
        self._fds.clear()

    def info(self) -> BusInfo:
        return {"bus": "file", "path": self.options.path, "sent": self._sent}


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> FileConsumer:
    """``file:PATH[?follow=1&offset=0]``; resumes from ``<file>.<channel>.offset`` by default."""
    return FileConsumer(FileOptions.from_url(url), topic, channel, prefetch)


def open_producer(url: str, *, credentials: Credentials) -> FileProducer:
    """``file:PATH``: appends ``<topic>.jsonl`` in PATH (or beside it when PATH is a file)."""
    return FileProducer(FileOptions.from_url(url))
