"""One way to wait between retries: delays that grow by a factor up to a cap.

The Launcher's done-task sends, the ledger recorder's writes and the brokers' reconnecting
fetches and publishes all retry; each names its own first delay and cap here instead of
keeping a hand-written table of delays.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """``first``, ``first * factor``, ``first * factor**2``... never more than ``cap`` seconds."""

    first: float
    cap: float
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 for the first failure)."""
        return min(self.cap, self.first * self.factor ** max(0, attempt))

    def delays(self, tries: int) -> tuple[float, ...]:
        """The waits between ``tries`` attempts: one fewer than the attempts."""
        return tuple(self.delay(i) for i in range(max(0, tries - 1)))
