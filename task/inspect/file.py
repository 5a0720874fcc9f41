"""Inspecting the file bus: the lines after each reader's saved offset.

Every reader (channel) of ``<topic>.jsonl`` keeps ``<topic>.jsonl.<channel>.offset``; what
lies after it waits. Lines a running reader holds but has not acknowledged are after its
offset too, so they count as waiting: a file has no lease to tell them apart. The file keeps
no times, so the oldest waiting task's age comes from its own ``created`` field.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from datetime import datetime
from itertools import islice
from pathlib import Path

from task.bus.file_options import FileOptions, offset_file, parse_offset
from task.credentials import Credentials
from task.errors import BusError, ConfigError
from task.inspect.age import created_age, utcnow
from task.inspect.base import TopicStats

__all__ = ["FileInspector", "open_inspector"]

_CHUNK = 1 << 20
_HELD = "lines a running reader holds but has not acknowledged count as waiting"


class FileInspector:
    """Reads ``file:`` topics and offset files; never writes either."""

    def __init__(self, options: FileOptions, now: Callable[[], datetime] = utcnow) -> None:
        self.options = options
        self._now = now

    def _topic_files(self) -> list[Path]:
        if not self.options.is_dir():
            path = Path(self.options.path)
            return [path] if path.is_file() else []
        base = Path(self.options.path)
        if not base.is_dir():
            raise ConfigError(f"file bus directory {base} does not exist; check the bus URL (--bus)")
        return sorted(base.glob("*.jsonl"))

    def _path(self, topic: str) -> Path:
        return self.options.topic_file(topic) if self.options.is_dir() else Path(self.options.path)

    @staticmethod
    def _channels(path: Path) -> list[str]:
        prefix, suffix = path.name + ".", ".offset"
        return sorted(
            f.name[len(prefix):-len(suffix)]
            for f in path.parent.glob(f"{path.name}.*{suffix}")
            if len(f.name) > len(prefix) + len(suffix)
        )

    async def topics(self, prefix: str | None = None) -> list[TopicStats]:
        """One row per reader of each ``<topic>.jsonl``; a file nobody reads yet gets one row
        with the channel empty, where every line waits."""
        rows: list[TopicStats] = []
        for path in self._topic_files():
            topic = path.stem
            if prefix and not topic.startswith(prefix):
                continue
            channels = self._channels(path)
            if not channels:
                stats = self._stats(path, topic, "", 0)
                stats.notes.insert(0, "no reader yet: every line waits")
                rows.append(stats)
            rows.extend(self._backlog(path, topic, channel) for channel in channels)
        return rows

    async def backlog(self, topic: str, channel: str) -> TopicStats:
        return self._backlog(self._path(topic), topic, channel or topic)

    def _backlog(self, path: Path, topic: str, channel: str) -> TopicStats:
        start, note = self._start(path, channel)
        stats = self._stats(path, topic, channel, start)
        if note:
            stats.notes.insert(0, note)
        return stats

    def _start(self, path: Path, channel: str) -> tuple[int, str | None]:
        """Where ``channel``'s reader would go on, as ``FileConsumer`` decides it."""
        saved = offset_file(path, channel)
        try:
            offset, inode = parse_offset(saved.read_bytes())
        except FileNotFoundError:
            return 0, f"channel {channel!r} has no offset file yet: it would read from the start"
        except (OSError, ValueError) as err:
            return 0, f"unreadable offset file {saved} ({err}): the reader starts from the start"
        try:
            info = path.stat()
        except FileNotFoundError:
            return 0, None
        if offset and inode not in (None, info.st_ino):
            return 0, f"{path.name} was replaced since {saved.name} was written: read from the start"
        if offset > info.st_size:
            return 0, f"{path.name} is shorter than its saved offset: read from the start"
        return offset, None

    def _stats(self, path: Path, topic: str, channel: str, start: int) -> TopicStats:
        waiting = 0
        age: float | None = None
        for line in self._lines(path, start):
            if waiting == 0:
                age = created_age(line, self._now())
            waiting += 1
        stats = TopicStats(topic, channel, waiting=waiting, oldest_age_seconds=age)
        if waiting and channel:
            stats.notes.append(_HELD)
        return stats

    @staticmethod
    def _lines(path: Path, start: int) -> Generator[bytes, None, None]:
        """Non-blank complete lines from byte ``start`` (a line still being written waits)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as err:
            raise BusError(f"cannot read {path}: {err}") from err
        try:
            position, buffer = start, b""
            while data := os.pread(fd, _CHUNK, position):
                position += len(data)
                *lines, buffer = (buffer + data).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line.rstrip(b"\r")
        finally:
            os.close(fd)

    async def peek(self, topic: str, n: int, channel: str | None = None) -> list[bytes]:
        path = self._path(topic)
        start, _ = self._start(path, channel or topic)
        lines = self._lines(path, start)
        try:
            return list(islice(lines, max(0, n)))
        finally:
            lines.close()  # closes the file now, not when the generator is collected

    async def close(self) -> None:
        """Nothing is held open between calls."""


def open_inspector(url: str, *, credentials: Credentials) -> FileInspector:
    """``file:PATH``: the topics of a directory, or one file.

    Raises:
        ConfigError: ``file:-`` (stdin keeps nothing to inspect) or a malformed URL.
    """
    options = FileOptions.from_url(url)
    if options.path == "-":
        raise ConfigError("file:- is stdin and stdout: nothing is kept to inspect; use file:DIR/")
    return FileInspector(options)
