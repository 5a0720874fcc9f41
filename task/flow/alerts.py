"""Alerts of ``taskbus flow``: recorded in the task store, then handed to each notifier.

An alert says a workflow needs a human: a task out of retries (``error``), a worker that
ended a task with ``alert``, a task created and not done within ``task_ttl``
(``incomplete``), a phase that could not start (``alert``). The first notifier sends it to
the alert topic as a task (the task concerned, its meta carrying ``alert=<kind>`` and its
msg saying what happened), one JSON line a Go tool or ``taskbus logger`` reads as any task.

``Notifier`` is the seam for what comes with the console (a webhook with a summary): a class
with ``notify`` added to ``Alerts.notifiers``. A notifier that fails is logged and counted;
it never stops the others, nor the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from task.bus.base import Producer
from task.flow.store import AlertKind, AlertRecord, TaskStore
from task.task import Task

__all__ = ["AlertKind", "Alerts", "Notifier", "TopicNotifier"]

logger = logging.getLogger(__name__)


class Notifier(Protocol):
    """Where alerts go besides the store (the alert topic; a webhook later)."""

    async def notify(self, alert: AlertRecord, task: Task) -> None:
        """Deliver one alert about ``task``.

        Raises:
            Exception: any failure; ``Alerts`` logs and counts it.
        """


class TopicNotifier:
    """Sends each alert to ``topic`` as a task: ``task`` with ``alert=<kind>`` in its meta
    and the alert's message as its msg."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def notify(self, alert: AlertRecord, task: Task) -> None:
        """Send the alert task.

        Raises:
            BusError: the bus refused it.
        """
        note = task.copy(msg=alert.msg)
        note.set_meta("alert", str(alert.kind))
        await self.producer.send(self.topic, note.to_json(), key=task.id or None)


class Alerts:
    """Records alerts in ``store`` and hands them to ``notifiers``."""

    def __init__(
        self,
        store: TaskStore,
        notifiers: Sequence[Notifier] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifiers = list(notifiers)
        self.clock = clock
        self.raised = 0
        #: store writes and notifier deliveries that failed
        self.errors = 0

    async def raise_alert(self, kind: AlertKind, task: Task, msg: str) -> AlertRecord:
        """Record an alert about ``task`` and notify; never raises."""
        record = AlertRecord(at=self.clock(), id=task.id, type=task.type, job=task.job,
                             kind=kind, msg=msg)
        self.raised += 1
        logger.warning("alert (%s) for task %s (%s%s): %s", kind, task.id, task.type,
                       f":{task.job}" if task.job else "", msg)
        try:
            await self.store.record_alert(record)
        except Exception as err:  # noqa: BLE001 - the notifiers still get it
            self.errors += 1
            logger.error("cannot record the alert for task %s in the store: %s", task.id, err)
        for notifier in self.notifiers:
            try:
                await notifier.notify(record, task)
            except Exception as err:  # noqa: BLE001 - one notifier's failure stops no other
                self.errors += 1
                logger.error("%s could not deliver the alert for task %s: %s",
                             type(notifier).__name__, task.id, err)
        return record

    def stats(self) -> dict[str, object]:
        """Counters for ``/stats``."""
        return {"alerts": self.raised, "alert_errors": self.errors}
