"""What a ``file:`` URL says, and where each reader keeps its offset."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

from task.errors import ConfigError
from task.url import parse_url

__all__ = ["FileOptions", "SavedOffset", "offset_file", "parse_offset"]

_FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".txt", ".log")
#: what a channel may keep in an offset file's name; anything else becomes ``_``
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def offset_file(path: Path, channel: str) -> Path:
    """``<file>.<channel>.offset``: one per reader, so readers on different channels never
    take each other's lines. The channel is reduced to letters, digits, ``-`` and ``_``."""
    return path.with_name(f"{path.name}.{_UNSAFE.sub('_', channel)}.offset")


class SavedOffset(NamedTuple):
    """What an offset file holds: every line before ``offset`` is acknowledged, in the file
    whose inode is ``inode`` (None in files written before the inode was kept)."""

    offset: int
    inode: int | None


def parse_offset(text: bytes | str) -> SavedOffset:
    """Read an offset file's content (``"1234 5678"``, or ``"1234"`` as older versions wrote).

    Raises:
        ValueError: the content is not one or two integers.
    """
    fields = (text.encode() if isinstance(text, str) else text).strip(b"\0 \n").split()
    if not fields:
        return SavedOffset(0, None)
    if len(fields) > 2:
        raise ValueError(f"not an offset record: {text!r}")
    return SavedOffset(int(fields[0]), int(fields[1]) if len(fields) > 1 else None)


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
