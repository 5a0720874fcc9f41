"""A progress bar for long command-line work (batch, bench): a bar on a terminal, a line per
tenth when the output is a file or a pipe, so logs stay readable."""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """A progress bar on a terminal; a line per tenth done when the stream is not one."""

    def __init__(self, total: int, stream: TextIO, *, label: str = "batch") -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0
        self._tenth = 0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more tasks done and redraw when due."""
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= 0.1 or self.done == self.total:
                self._drawn = now
                self._draw()
        elif self.total and (tenth := self.done * 10 // self.total) > self._tenth:
            self._tenth = tenth
            self.stream.write(f"{self.label}: {self.done}/{self.total} tasks\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.total:  # an open-ended count (recover does not know how many are lost)
            rate = self.done / max(time.monotonic() - self._started, 1e-6)
            self.stream.write(f"\r{self.label}: {self.done} {rate:,.0f}/s")
            self.stream.flush()
            return
        width = 30
        filled = width * self.done // self.total if self.total else width
        rate = self.done / max(time.monotonic() - self._started, 1e-6)
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {rate:,.0f}/s"
        )
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
