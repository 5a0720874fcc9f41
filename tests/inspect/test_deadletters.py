"""Dead-letter envelopes read back exactly as the Launcher writes them."""

from __future__ import annotations

from task.bus.deadletter import DEAD_LETTER_MAX_BYTES, dead_letter_envelope
from task.inspect.deadletters import parse_dead_letter
from task.task import Task


def test_a_task_envelope_round_trips() -> None:
    body = Task.new("nop", "x", id="t1").to_json()
    letter = parse_dead_letter(dead_letter_envelope(body, "boom", "nop", 5))
    assert (letter.reason, letter.topic, letter.attempts, letter.body) == ("boom", "nop", 5, body)
    assert letter.task_id == "t1" and letter.why_not_replayable is None


def test_a_body_that_is_not_utf8_comes_back_byte_for_byte() -> None:
    body = b"\xff\xfe binary"
    letter = parse_dead_letter(dead_letter_envelope(body, "not JSON", "nop", 1))
    assert letter.body == body and letter.task_id is None


def test_a_cut_body_and_a_stray_message_are_not_replayable() -> None:
    cut = parse_dead_letter(dead_letter_envelope(b"x" * (DEAD_LETTER_MAX_BYTES + 1), "big", "nop", 1))
    assert cut.truncated and "cut" in (cut.why_not_replayable or "")
    stray = parse_dead_letter(b"hello")
    assert stray.body is None and stray.raw == b"hello"
    assert "not a dead-letter envelope" in (stray.why_not_replayable or "")
