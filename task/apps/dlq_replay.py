"""Replaying dead letters: each chosen body goes back to its topic, and its envelope leaves
the dead-letter topic only once that send is confirmed.

Kafka and the file bus cannot remove one message out of the middle: a reader's position
moves past a message only once every message before it is acknowledged. So every envelope
read is acknowledged, and one not chosen (or not replayable) is first sent again to the end
of the dead-letter topic: it stays, and the position can move. The same on every bus, so
``dlq ls`` shows exactly what was not replayed. A crash between the send and the
acknowledgement leaves a duplicate (the task sent twice, or an envelope kept twice), never a
loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from task.bus.base import Consumer, Message, Producer
from task.errors import BusError
from task.inspect.deadletters import DeadLetter, parse_dead_letter

__all__ = ["Choice", "ReplayReport", "replay"]

logger = logging.getLogger(__name__)


class Choice:
    """Which envelopes to replay: every one, the very envelopes listed (as ``dlq ls`` showed
    them: matched by their bytes, since a bus may deliver in another order than it lists),
    or those whose task has one of ``ids``."""

    def __init__(self, *, everything: bool = False, envelopes: Sequence[bytes] = (),
                 ids: Collection[str] = ()) -> None:
        self.everything = everything
        self._left = Counter(envelopes)
        self._ids = set(ids)
        #: how many envelopes were picked so far
        self.picked = 0

    def pick(self, letter: DeadLetter) -> bool:
        """Whether to replay ``letter``; each listed envelope is picked once."""
        if self._left[letter.raw] > 0:
            self._left[letter.raw] -= 1
        elif not self.everything and not (self._ids and letter.task_id in self._ids):
            return False
        self.picked += 1
        return True

    def finished(self) -> bool:
        """Nothing more can be picked: reading further would only move envelopes around."""
        return not self.everything and not self._ids and not +self._left


@dataclass
class ReplayReport:
    """What a replay did; ``chosen`` is how many envelopes were asked for."""

    chosen: int
    replayed: int = 0
    kept: int = 0
    #: chosen envelopes that could not be replayed, each with why
    refused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``replayed 12 of 12`` and what was kept or refused."""
        text = f"replayed {self.replayed} of {self.chosen}"
        if self.kept:
            text += f"; {self.kept} kept in the dead-letter topic"
        return text


async def _send_then_ack(producer: Producer, topic: str, body: bytes, message: Message) -> None:
    """Acknowledge ``message`` once ``body`` is confirmed on ``topic``; give it back if not."""
    try:
        await producer.send(topic, body)
    except BusError:
        await message.nack(0)
        raise
    await message.ack()


async def replay(
    consumer: Consumer,
    producer: Producer,
    dead_letter_topic: str,
    *,
    present: int,
    chosen: int | None,
    choice: Choice,
    patience: float = 10.0,
) -> ReplayReport:
    """Read up to the ``present`` envelopes of the dead-letter topic once, in order, and send
    the body of each ``choice`` picks back to its topic; stop once nothing more can be picked.
    ``chosen`` is how many are asked for; None where it is known only by reading them (NSQ,
    which cannot list, and ``--id``): then it is how many were picked.

    Stops early, too, when no message comes within ``patience`` seconds (an envelope another
    reader holds); those stay where they are.

    Raises:
        BusError: a send failed; the message being handled is not acknowledged, so it stays.
    """
    report = ReplayReport(chosen=chosen or 0)
    for position in range(1, present + 1):
        if choice.finished():
            break
        try:
            message = await asyncio.wait_for(consumer.msg(), patience)
        except TimeoutError:
            logger.warning("no dead letter came within %.0fs: stopping after %d of %d",
                           patience, position - 1, present)
            break
        if message is None:
            break
        letter = parse_dead_letter(message.body)
        if choice.pick(letter):
            why = letter.why_not_replayable
            if why is None and letter.body is not None:
                await _send_then_ack(producer, letter.topic, letter.body, message)
                report.replayed += 1
                continue
            report.refused.append(f"{letter.task_id or 'an envelope without a task id'}: {why}")
        await _send_then_ack(producer, dead_letter_topic, message.body, message)
        report.kept += 1
    if chosen is None:
        report.chosen = choice.picked
    return report
