"""Which Kafka offsets are safe to commit when messages of one partition finish out of order.

Kafka remembers one number per partition: the next offset a group should read. With several
tasks of one partition running at once, task 7 may finish before task 5; committing 8 then
and crashing would skip task 5 forever. So the commit of a partition stops at its lowest
unfinished offset, and only moves past it once it is done. Commits are batched (by count and
by time) because one commit per task would cost a broker round trip per task.

Pure bookkeeping, no I/O: ``task.bus.kafka_consumer`` feeds it and sends the commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["OffsetBook", "PartitionOffsets"]

K = TypeVar("K", bound=Hashable)


class PartitionOffsets:
    """The handed-out offsets of one partition for one assignment, oldest first.

    Offsets must be handed out in increasing order (Kafka delivers a partition in order);
    gaps are fine (compaction, transaction markers). ``revoked`` is set when the partition
    leaves this consumer: late acknowledgements are then ignored, because the new owner
    reads from the committed offset and will run those tasks itself.

    Only the set of unfinished offsets is kept: handing out and finishing are one set
    operation each (they happen per message), and the lowest unfinished offset is looked for
    when a commit asks (every few dozen messages), not kept in order on every finish.
    """

    __slots__ = ("_committed", "_next", "_open", "revoked")

    def __init__(self) -> None:
        self._open: set[int] = set()  # handed-out offsets not done yet
        self._next: int | None = None  # one past the highest offset handed out
        self._committed: int | None = None
        self.revoked = False

    def handed(self, offset: int) -> None:
        """``offset`` was handed to a worker.

        Raises:
            ValueError: ``offset`` is not above every offset handed out before.
        """
        after = self._next
        if after is not None and offset < after:
            raise ValueError(f"offset {offset} handed out after {after - 1}")
        self._open.add(offset)
        self._next = offset + 1

    def finished(self, offset: int) -> None:
        """``offset`` is done (its done task is confirmed); unknown or repeated ones are ignored."""
        self._open.discard(offset)

    def finished_all(self, offsets: Iterable[int]) -> None:
        """Each of ``offsets`` is done, as ``finished`` one by one."""
        self._open.difference_update(offsets)

    @property
    def unfinished(self) -> int:
        """How many handed-out offsets are not done yet."""
        return len(self._open)

    def safe(self) -> int | None:
        """The offset to commit: the lowest unfinished one, else one past the last handed out.

        None when nothing was handed out in this assignment.
        """
        if self._open:
            return min(self._open)
        return self._next

    def to_commit(self) -> int | None:
        """``safe()`` when it moved past the last commit, else None."""
        safe = self.safe()
        if safe is None or safe == self._committed:
            return None
        return safe

    def committed(self, offset: int) -> None:
        """The broker confirmed a commit of ``offset``."""
        if self._committed is None or offset > self._committed:
            self._committed = offset


class OffsetBook(Generic[K]):
    """Every assigned partition's offsets, and when the next batched commit is due.

    A commit is due after ``every`` finished messages or ``interval`` seconds after the
    first finished message since the last commit, whichever comes first.
    """

    def __init__(
        self, *, every: int = 1000, interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = max(1, every)
        self.interval = interval
        self._clock = clock
        self._parts: dict[K, PartitionOffsets] = {}
        self._since_commit = 0
        self._first_finish: float | None = None

    def partition(self, key: K) -> PartitionOffsets:
        """The live offsets of ``key``, created on first use (a new assignment)."""
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = PartitionOffsets()
        return part

    def finished(self, part: PartitionOffsets, offset: int) -> None:
        """A message of ``part`` is done; ignored when the partition was revoked meanwhile."""
        if part.revoked:
            return
        part.finished(offset)
        self._since_commit += 1
        if self._first_finish is None:
            self._first_finish = self._clock()

    def finished_all(self, part: PartitionOffsets, offsets: list[int]) -> None:
        """Several messages of ``part`` are done (a delivered batch's): ``finished`` for each,
        in one step."""
        if part.revoked or not offsets:
            return
        part.finished_all(offsets)
        self._since_commit += len(offsets)
        if self._first_finish is None:
            self._first_finish = self._clock()

    def count_due(self) -> bool:
        """Enough messages finished since the last commit to commit now."""
        return self._since_commit >= self.every

    def due_in(self) -> float | None:
        """Seconds until the time-based commit is due (0 when overdue); None when idle."""
        if self._first_finish is None:
            return None
        return max(0.0, self._first_finish + self.interval - self._clock())

    def to_commit(self, keys: Iterable[K] | None = None) -> dict[K, int]:
        """Offsets that moved since their last commit, for ``keys`` (default: all)."""
        chosen = self._parts if keys is None else {k: self._parts[k] for k in keys if k in self._parts}
        offsets = {}
        for key, part in chosen.items():
            offset = part.to_commit()
            if offset is not None:
                offsets[key] = offset
        return offsets

    def taken(self) -> None:
        """A commit of everything ``to_commit()`` returned is under way: restart the batch."""
        self._since_commit = 0
        self._first_finish = None

    def committed(self, offsets: dict[K, int]) -> None:
        """The broker confirmed ``offsets``."""
        for key, offset in offsets.items():
            part = self._parts.get(key)
            if part is not None:
                part.committed(offset)

    def unfinished(self, keys: Iterable[K] | None = None) -> int:
        """Handed-out messages not done yet, in ``keys`` (default: all partitions)."""
        chosen = self._parts.values() if keys is None else (self._parts[k] for k in keys if k in self._parts)
        return sum(part.unfinished for part in chosen)

    def revoke(self, keys: Iterable[K]) -> None:
        """Forget ``keys``: they left this consumer; late finishes on them are ignored."""
        for key in keys:
            part = self._parts.pop(key, None)
            if part is not None:
                part.revoked = True

    def __contains__(self, key: object) -> bool:
        return key in self._parts
