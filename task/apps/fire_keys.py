"""Fire keys: one cron replica fires each tick of a rule, even after its task is done.

Replicas running the same rules make the same task for a tick (its id is derived from the
rule and the instant), and the task's own ledger record stops a second send only while it
exists: ``done`` deletes it, so a replica a second late would fire again. A fire key is a
ledger record kept apart from outstanding tasks, on the task list ``cron:<rule key>`` with
the task's id (rule + tick) as id. ``created`` makes it if missing (the ledger's ``claim``
takes only an existing record), then ``claim`` takes it for ``ttl`` seconds: the replica
whose claim succeeds fires, every other one skips the tick. A replica whose send fails gives
the key back (``done``), so a late replica can still fire the tick.

Keys are deleted ``ttl`` after their claim by whichever replica sweeps first (``outstanding``
then ``done``), so the ledger does not grow with every tick; a replica later than ``ttl``
would fire again. ``recover`` skips these task lists: they hold no task to resend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from task.ledger.base import Ledger
from task.task import Task

__all__ = ["PREFIX", "FireKeys", "is_key_list", "key_list", "replica_name"]

logger = logging.getLogger(__name__)

#: Task lists of fire keys start with this; no task type should.
PREFIX = "cron:"
#: Seconds between two sweeps of one rule's expired keys.
SWEEP_EVERY = 3600.0


def key_list(rule_key: str) -> str:
    """The task list holding the fire keys of the rule ``rule_key``."""
    return PREFIX + rule_key


def is_key_list(task_list: str) -> bool:
    """True for a task list of fire keys (not of tasks)."""
    return task_list.startswith(PREFIX)


def replica_name() -> str:
    """What this process calls itself in the ledger's claims: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class FireKeys:
    """Takes, gives back and sweeps the fire keys of cron rules in ``ledger``.

    The ledger is a safety net, not the critical path: when it fails or takes longer than
    ``timeout``, the tick is fired anyway (a duplicate carries the same id; a missed run
    would be worse).
    """

    def __init__(self, ledger: Ledger, *, ttl: float, owner: str = "", timeout: float = 5.0) -> None:
        self.ledger = ledger
        self.ttl = ttl
        self.owner = owner or replica_name()
        self.timeout = timeout
        #: ledger failures while taking, giving back or sweeping keys
        self.errors = 0
        self._swept: dict[str, float] = {}

    async def take(self, rule_key: str, task: Task) -> bool | None:
        """Take the key of ``task``'s tick: True when this replica fires it, False when
        another one holds it, None when the ledger failed (fire anyway)."""
        name = key_list(rule_key)
        try:
            await asyncio.wait_for(self.ledger.created(task, name), self.timeout)
            return await asyncio.wait_for(
                self.ledger.claim(name, task.id, self.owner, self.ttl, older_than=0),
                self.timeout,
            )
        except Exception as err:  # noqa: BLE001 - any ledger failure: fire rather than miss
            self._failed("take the fire key of task", task.id, err)
            return None

    async def give_back(self, rule_key: str, task: Task) -> None:
        """Delete the key of a tick whose send failed, so another replica may fire it."""
        try:
            await asyncio.wait_for(self.ledger.done(key_list(rule_key), task.id), self.timeout)
        except Exception as err:  # noqa: BLE001 - the key then expires after ttl
            self._failed("give back the fire key of task", task.id, err)

    async def sweep(self, rule_key: str, now: float) -> int:
        """Delete the rule's keys claimed more than ``ttl`` ago, at most once per
        ``SWEEP_EVERY`` seconds of ``now``; returns how many were deleted."""
        if now - self._swept.get(rule_key, float("-inf")) < SWEEP_EVERY:
            return 0
        self._swept[rule_key] = now
        name, deleted = key_list(rule_key), 0
        try:
            async for record in self.ledger.outstanding(name, self.ttl):
                await asyncio.wait_for(self.ledger.done(name, record.task.id), self.timeout)
                deleted += 1
        except Exception as err:  # noqa: BLE001 - the next sweep tries again
            self._failed("sweep the fire keys of rule", rule_key, err)
        if deleted:
            logger.debug("deleted %d expired fire keys of rule %s", deleted, rule_key)
        return deleted

    def _failed(self, what: str, which: str, err: BaseException) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            logger.warning("ledger could not %s %s (%s; %d failures so far)", what, which,
                           err or type(err).__name__, self.errors)
