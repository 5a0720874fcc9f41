"""Reading a done task off the done topic, for the taskmasters that act on done tasks
(retry, flow).

A message that is no task can never be acted on, and a nack would only bring it back
forever: it is counted, logged and acknowledged, and the app goes on with the next one.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

from task.bus.base import Message
from task.errors import InvalidTaskError
from task.task import Task

__all__ = ["read_done"]


async def read_done(message: Message, counts: MutableMapping[str, int], log: logging.Logger) -> Task | None:
    """The done task in ``message``, counted in ``counts["consumed"]``; None when it is no
    task, after counting it in ``counts["invalid"]``, logging it on ``log`` (the app's
    logger, so the line names the app) and acknowledging it.

    Raises:
        BusError: acknowledging a message that is no task failed.
    """
    counts["consumed"] += 1
    try:
        return Task.from_json(message.body)
    except InvalidTaskError as err:
        counts["invalid"] += 1
        log.warning("not a task on the done topic, skipped: %s", err)
        await message.ack()
        return None
