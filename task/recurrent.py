"""Recurrent tasks: a task with ``every=1h`` in its meta is sent again when it completes.

The next run goes through the delayed path (``task.delayed``), due the interval after the
task ended, so it waits in the broker or the ledger like any delayed task and survives
restarts. It gets a new id, with ``prev=<id>`` in its meta: the same id would collide with
the ledger's record of the run before. The new id is derived from the previous one, so a
done task handled twice (a redelivery after a crash) schedules the same next run, not two.

Only a ``complete`` result recurs: a failed run is the retry app's business, and a chain that
stops on failure is one a human notices. Cron stays the tool for wall-clock schedules.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from task import rfc3339
from task.bus.base import Producer
from task.delayed import RUN_AT, DelayedSend, send_delayed
from task.duration import parse_duration
from task.errors import ConfigError, TaskError
from task.ledger.base import Ledger
from task.result import Result
from task.task import Task

__all__ = ["EVERY", "MIN_EVERY", "PREV", "Recurrence", "next_run"]

logger = logging.getLogger(__name__)

#: The meta key holding a recurrent task's interval (``every=1h``, ``every=30m``).
EVERY = "every"
#: The meta key naming the id of the run before.
PREV = "prev"
#: The shortest interval accepted, in seconds: shorter would spin, not recur.
MIN_EVERY = 1.0
#: Names the ids of recurrences: uuid5(this, previous id).
_ID_SPACE = uuid.UUID("5b0c1d2e-7a43-4f1e-9b3a-0d7e8c6f2a91")


def next_run(done: Task, now: datetime) -> tuple[Task, datetime] | None:
    """The next run of a done recurrent task and when it is due; None when ``done`` does not
    recur (no ``every``, not complete, or no id to chain from).

    Raises:
        ConfigError: ``every`` is not a duration of at least ``MIN_EVERY`` seconds.
    """
    if "every=" not in done.meta or done.result != Result.COMPLETE or not done.id:
        return None  # the cheap test first: this runs for every done task
    text = done.get_meta(EVERY)
    if not text:
        return None
    every = parse_duration(text, f"every= of task {done.id}")
    if every < MIN_EVERY:
        raise ConfigError(f"every={text} of task {done.id} is shorter than {MIN_EVERY:g}s; "
                          "use a longer interval (or cron)")
    ended = done.ended_at
    base = ended if ended is not None and ended <= now else now
    again = done.copy(id=str(uuid.uuid5(_ID_SPACE, done.id)), created=rfc3339.format_utc(now),
                      result="", msg="", started="", ended="")
    again.set_meta(PREV, done.id)
    again.set_meta(RUN_AT)
    return again, base + timedelta(seconds=every)


class Recurrence:
    """The Launcher's ``after_done`` hook: sends the next run of each done recurrent task
    back to the topic it was read from (``topic_of``: a ``PriorityConsumer`` reading
    ``high,default,low`` knows it), else to ``topic`` (default: the task's type), through
    ``send_delayed``.

    A recurrence that cannot be sent (the bus or ledger refused it, a bad ``every``) is
    logged as one line and counted in ``failures``; it never fails the task that ran.
    """

    def __init__(
        self,
        producer: Producer,
        ledger: Ledger | None,
        *,
        topic: str = "",
        topic_of: Callable[[Task], str | None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.producer = producer
        self.ledger = ledger
        self.topic = topic
        #: the topic a task was read from, where the consumer knows it (several topics)
        self.topic_of = topic_of
        self.clock = clock
        self.sent = 0
        self.failures = 0

    async def __call__(self, done: Task) -> DelayedSend | None:
        """Send the next run of ``done`` when it recurs; what was sent, or None."""
        if "every=" not in done.meta:
            return None  # the cheap test first: this runs for every done task
        came_from = self.topic_of(done) if self.topic_of is not None else None
        try:
            found = next_run(done, self.clock())
            if found is None:
                return None
            again, at = found
            sent = await send_delayed(self.producer, came_from or self.topic or again.type, again, at,
                                      ledger=self.ledger)
        except TaskError as err:
            self.failures += 1
            logger.error("recurrent task %s (%s) not sent again: %s", done.id, done.type, err)
            return None
        self.sent += 1
        logger.info("recurrent task %s (%s) runs again at %s as %s", done.id, done.type,
                    rfc3339.format_utc(sent.at), sent.id)
        return sent
