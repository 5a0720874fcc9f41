"""The file bus consumer: lines of a file (or stdin) as messages, with a saved offset.

The Launcher calls ``msg()`` from ``max_in_progress`` runners at once, so every wait here is
a ``Waiters`` queue: one reader fills lines from the file while the others wait, a line given
back by ``nack`` wakes one caller, and ``stop()`` (or the end of a finite file, once nothing
handed out can come back) wakes them all.

The offset file holds the byte offset up to which every line is acknowledged and the inode
of the file it belongs to, so a file rotated while no reader ran is read from its start
instead of from an offset that belonged to its predecessor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
from collections import deque
from pathlib import Path

from task.bus.base import BusInfo, BusPart
from task.bus.file_options import FileOptions, offset_file, parse_offset
from task.bus.waiters import Waiters
from task.errors import BusError, ConfigError

__all__ = ["FileConsumer", "FileMessage"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class FileMessage:
    """One line. ``ack`` moves the saved offset once every earlier line is acknowledged."""

    __slots__ = ("_consumer", "_settled", "attempt", "body", "end", "generation")

    def __init__(self, consumer: FileConsumer, body: bytes, end: int, attempt: int = 1, generation: int = 0) -> None:
        self.body = body
        self.attempt = attempt
        #: byte offset just after this line, in the file of ``generation``
        self.end = end
        #: which file the line came from: it changes when a followed file is rotated
        self.generation = generation
        self._consumer = consumer
        self._settled = False

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._consumer._acked()

    async def nack(self, delay: float = 0) -> None:
        """Give the line back to this consumer after ``delay`` seconds (attempt + 1)."""
        if not self._settled:
            self._settled = True
            self._consumer._requeue(self, delay)

    async def in_progress(self) -> None:
        """Nothing to extend: a file has no lease."""


class FileConsumer(BusPart):
    """Reads lines of a file (or stdin) as messages.

    With ``from_end`` it starts at the file's end as it is at ``start()`` (the beginning of a
    file created later), whatever an offset file says: what ``task.Client`` uses, with
    ``?follow=1&offset=0``, to follow the done topic from now on.
    """

    def __init__(
        self, options: FileOptions, topic: str, channel: str = "", prefetch: int = 1, *, from_end: bool = False
    ) -> None:
        self.from_end = from_end
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
        self._generation = 0
        self._position = 0  # bytes of the file consumed into lines or the buffer
        self._buffer = b""
        self._lines: deque[tuple[bytes, int]] = deque()
        self._pending: deque[FileMessage] = deque()  # handed out, in file order
        self._retry: deque[FileMessage] = deque()
        self._waiters = Waiters()
        self._filling = False
        self._unsettled = 0  # handed out, neither acked nor nacked
        self._delayed = 0  # nacked, waiting out their delay
        self._offset_fd: int | None = None
        self._committed = 0
        self._saved_inode: int | None = None
        self._eof = False
        self._stopped = False
        self._received = 0
        self._wake: asyncio.Event | None = None
        self._stdin_wait: asyncio.Future[None] | None = None

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
        if self.from_end and self.path is not None:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                return
            self._committed, self._saved_inode = info.st_size, info.st_ino

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
        try:
            self._committed, self._saved_inode = parse_offset(os.pread(self._offset_fd, 64, 0))
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
        info = os.fstat(self._fd)
        self._inode = info.st_ino
        if self._committed and self._saved_inode not in (None, info.st_ino):
            logger.info("%s is a new file since its offset was saved (rotated): reading it from the start", self.path)
            self._committed = 0
        elif self._committed > info.st_size:
            logger.warning("%s is shorter than its saved offset %d: reading from the start", self.path, self._committed)
            self._committed = 0
        self._position = self._committed
        return True

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
        """Read more lines; False when there is nothing more (end of a non-followed file).
        Also returns once a nacked line is back, so a lone caller does not sleep past it."""
        while not self._stopped:
            if self._retry:
                return True
            if self._fd is None and not self._open():
                if not self.options.follow:
                    logger.warning("%s does not exist: nothing to read", self.path)
                    return False
                await self._sleep(self.options.poll)
                continue
            assert self._fd is not None
            data = await self._read_stdin() if self.path is None else os.pread(self._fd, _CHUNK, self._position)
            if data:
                self._split(data)
                return True
            if not self.options.follow or self.path is None:
                if self._buffer.strip():  # last line without a newline
                    self._lines.append((self._buffer, self._position))
                    self._buffer = b""
                    return True
                return False
            if self._rotated():
                continue
            await self._sleep(self.options.poll)
        return False

    async def _read_stdin(self) -> bytes:
        """The next bytes of stdin, waiting on the event loop (not in a thread) for a pipe or
        terminal, so ``stop()`` ends the wait; b"" at the end of input or once stopped."""
        fd = self._fd
        assert fd is not None
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return os.read(fd, _CHUNK)
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        self._stdin_wait = readable

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
            self._stdin_wait = None
        return b"" if self._stopped else os.read(fd, _CHUNK)

    def _rotated(self) -> bool:
        """A followed file truncated or replaced: start reading it from the beginning."""
        assert self.path is not None and self._fd is not None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        if info.st_ino != self._inode or info.st_size < self._position:
            logger.info("%s was rotated or truncated: reading it from the start", self.path)
            os.close(self._fd)
            self._fd = None
            self._generation += 1  # lines still handed out keep offsets of the old file
            self._committed = 0
            self._saved_inode = None
            self._buffer = b""
            self._open()
            self._position = 0
            self._save_offset()
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
        """The next line; None after ``stop()``, or at the end of a non-followed file once
        nothing handed out can come back (a line still in flight may be nacked)."""
        await self.start()
        while not self._stopped:
            if self._retry:
                self._unsettled += 1
                message = self._retry.popleft()
                if self._retry:
                    self._waiters.wake_one()  # pass the baton on
                return message
            if self._lines:
                body, end = self._lines.popleft()
                message = FileMessage(self, body, end, generation=self._generation)
                self._pending.append(message)
                if not body:
                    message._settled = True
                    self._commit()
                    continue
                self._received += 1
                self._unsettled += 1
                return message
            if not self._eof and not self._filling:
                self._filling = True  # one caller reads the file; the others wait for lines
                try:
                    self._eof = not await self._fill()
                finally:
                    self._filling = False
                    self._waiters.wake_all()
                continue
            if self._eof and not self._delayed and not self._unsettled:
                return None
            await self._waiters.wait(lambda: bool(self._retry or self._lines))
        return None

    def _requeue(self, message: FileMessage, delay: float) -> None:
        again = FileMessage(self, message.body, message.end, message.attempt + 1, message.generation)
        self._pending[self._pending.index(message)] = again
        self._unsettled -= 1
        self._delayed += 1

        def back() -> None:
            self._delayed -= 1
            self._retry.append(again)
            self._waiters.wake_one()
            if self._wake is not None:
                self._wake.set()  # a caller sleeping in a followed file's poll takes it

        if delay > 0:
            asyncio.get_running_loop().call_later(delay, back)
        else:
            back()

    def _acked(self) -> None:
        self._unsettled -= 1
        self._commit()
        if self._eof and not self._retry and not self._delayed and not self._unsettled:
            self._waiters.wake_all()  # a finished file: every waiting msg() returns None

    def _commit(self) -> None:
        """Move the offset past every leading settled line of the current file."""
        pending = self._pending
        moved = False
        while pending and pending[0]._settled:
            message = pending.popleft()
            if message.generation == self._generation:
                self._committed = message.end
                moved = True
        if moved:
            self._save_offset()
        if self._stopped and not pending:
            self._close_offset()

    def _save_offset(self) -> None:
        if self._offset_fd is not None:
            record = f"{self._committed:<20d} {self._inode or 0:<20d}\n"
            os.pwrite(self._offset_fd, record.encode(), 0)

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
        if self._stdin_wait is not None and not self._stdin_wait.done():
            self._stdin_wait.set_result(None)
        self._waiters.wake_all()
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

    @property
    def started(self) -> bool:
        """``start()`` ran (stays True after ``stop()``)."""
        return self._wake is not None

    def health(self) -> str | None:
        """Always None: a file has no connection to lose."""
        return None
