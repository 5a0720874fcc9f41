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

import logging
import os
import sys

from task.bus.base import BusInfo, BusPart
from task.bus.file_consumer import FileConsumer, FileMessage
from task.bus.file_options import FileOptions, offset_file
from task.credentials import Credentials
from task.errors import BusClosedError, BusError

__all__ = ["FileConsumer", "FileMessage", "FileOptions", "FileProducer", "offset_file"]

logger = logging.getLogger(__name__)

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
