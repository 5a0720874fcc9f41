"""Which offsets are safe to commit when tasks of one partition finish out of order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from task.bus.kafka_offsets import OffsetBook, PartitionOffsets


def test_nothing_handed_out_has_nothing_to_commit() -> None:
    part = PartitionOffsets()
    assert part.safe() is None and part.to_commit() is None


def test_in_order_finishes_commit_one_past_the_last() -> None:
    part = PartitionOffsets()
    for offset in (10, 11, 12):
        part.handed(offset)
    part.finished(10)
    assert part.safe() == 11
    part.finished(11)
    part.finished(12)
    assert part.safe() == 13 and part.unfinished == 0


def test_out_of_order_finish_commits_only_up_to_the_lowest_unfinished() -> None:
    # Given tasks 5, 6, 7 of one partition running at once
    part = PartitionOffsets()
    for offset in (5, 6, 7):
        part.handed(offset)
    # When 6 and 7 finish before 5
    part.finished(7)
    part.finished(6)
    # Then the commit stays at 5, so a crash redelivers 5 (and 6, 7 again): nothing skipped
    assert part.safe() == 5 and part.unfinished == 1
    # And once 5 finishes it jumps past all three
    part.finished(5)
    assert part.safe() == 8


def test_gaps_in_offsets_are_skipped() -> None:
    part = PartitionOffsets()
    for offset in (3, 7, 20):
        part.handed(offset)
    part.finished(3)
    assert part.safe() == 7
    part.finished(20)
    part.finished(7)
    assert part.safe() == 21


def test_repeated_and_unknown_finishes_are_ignored() -> None:
    part = PartitionOffsets()
    part.handed(1)
    part.handed(2)
    part.finished(2)
    part.finished(2)
    part.finished(99)
    assert part.unfinished == 1 and part.safe() == 1


def test_handing_out_backwards_is_refused() -> None:
    part = PartitionOffsets()
    part.handed(5)
    with pytest.raises(ValueError):
        part.handed(5)


def test_to_commit_is_none_until_the_safe_offset_moves() -> None:
    part = PartitionOffsets()
    part.handed(0)
    assert part.to_commit() == 0  # nothing done yet, but committing 0 is still correct
    part.committed(0)
    assert part.to_commit() is None
    part.finished(0)
    assert part.to_commit() == 1


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_safe_offset_never_passes_an_unfinished_one(order: list[int], how_many: int) -> None:
    part = PartitionOffsets()
    for offset in range(30):
        part.handed(offset)
    finished = set(order[:how_many])
    for offset in order[:how_many]:
        part.finished(offset)
    safe = part.safe()
    assert safe is not None
    assert all(o in finished for o in range(safe))  # everything below the commit is done
    assert safe == 30 or safe not in finished  # and it is the lowest unfinished one
    assert part.unfinished == 30 - len(finished)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_book_is_due_by_count() -> None:
    book: OffsetBook[str] = OffsetBook(every=3, interval=60)
    part = book.partition("p0")
    for offset in range(3):
        part.handed(offset)
    book.finished(part, 0)
    book.finished(part, 1)
    assert not book.count_due()
    book.finished(part, 2)
    assert book.count_due()
    assert book.to_commit() == {"p0": 3}
    book.taken()
    assert not book.count_due()


def test_book_is_due_by_time_after_the_first_finish() -> None:
    clock = Clock()
    book: OffsetBook[str] = OffsetBook(every=1000, interval=2.0, clock=clock)
    assert book.due_in() is None  # idle: no timer
    part = book.partition("p0")
    part.handed(0)
    book.finished(part, 0)
    clock.now += 0.5
    assert book.due_in() == pytest.approx(1.5)
    clock.now += 5
    assert book.due_in() == 0.0


def test_book_commits_only_moved_partitions_and_remembers_commits() -> None:
    book: OffsetBook[str] = OffsetBook()
    a, b = book.partition("a"), book.partition("b")
    a.handed(0)
    b.handed(0)
    book.finished(a, 0)
    offsets = book.to_commit()
    assert offsets == {"a": 1, "b": 0}
    book.committed(offsets)
    assert book.to_commit() == {}
    assert book.to_commit(["a"]) == {}


def test_revoked_partitions_ignore_late_finishes_and_start_fresh() -> None:
    book: OffsetBook[str] = OffsetBook()
    old = book.partition("p")
    old.handed(5)
    assert book.unfinished(["p"]) == 1
    book.revoke(["p"])
    assert "p" not in book and old.revoked
    book.finished(old, 5)  # a task that outlived the revocation: the new owner reruns it
    assert book.to_commit() == {}
    fresh = book.partition("p")
    assert fresh is not old and fresh.safe() is None


@given(st.permutations(list(range(20))), st.integers(0, 20))
def test_finishing_several_at_once_is_finishing_each(order: list[int], how_many: int) -> None:
    # Given two books with the same offsets handed out
    clock = Clock()
    one_by_one: OffsetBook[str] = OffsetBook(every=max(1, how_many), clock=clock)
    at_once: OffsetBook[str] = OffsetBook(every=max(1, how_many), clock=clock)
    for book in (one_by_one, at_once):
        for offset in range(20):
            book.partition("p0").handed(offset)
    # When one finishes offsets one at a time and the other all together (a delivered batch)
    for offset in order[:how_many]:
        one_by_one.finished(one_by_one.partition("p0"), offset)
    at_once.finished_all(at_once.partition("p0"), order[:how_many])
    # Then both commit the same offset and count the same finishes towards the next commit
    assert at_once.to_commit() == one_by_one.to_commit()
    assert at_once.unfinished() == one_by_one.unfinished() == 20 - how_many
    assert at_once.due_in() == one_by_one.due_in()
    assert at_once.count_due() == one_by_one.count_due() == (how_many > 0)


def test_finishing_several_on_a_revoked_partition_is_ignored() -> None:
    book: OffsetBook[str] = OffsetBook(every=1)
    part = book.partition("p0")
    part.handed(0)
    book.revoke(["p0"])
    book.finished_all(part, [0])
    assert not book.count_due() and book.to_commit() == {}
