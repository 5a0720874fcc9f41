"""The workflow state machine of ``taskbus flow``: what a done task, a cron tick or a file
starts.

A done task with ``workflow=`` meta is flow's; any other is ignored. By its result:

- ``complete``: each child phase (``dependsOn`` its type[:job], in its workflow) whose
  ``require`` keys the parent's meta has starts, keeping the parent's id (Go's flowlord).
- ``error``: retried after the phase's ``retry_delay`` plus up to 40 % jitter (1 s without
  jitter when unset, as Go) until it has been retried ``retry`` times. The retry waits in
  the ledger's schedule (``ScheduleKind.FLOW``), not in memory, so a restart loses none; its
  due time is counted from the task's ``ended`` with a jitter drawn from its id, so the same
  done task read twice gets the same time. Out of retries, it goes to the failed topic
  (meta ``retry=failed&retried=N``, as Go) and raises an alert unless ``no_alert``.
- ``alert``: an alert at once. ``warn``: recorded only.

Every event goes to the task store. Replicas sharing a ledger fire a cron tick or a parent's
children once: each takes a fire key (``task.apps.fire_keys``) first. A task created and not
done within ``task_ttl`` raises one ``incomplete`` alert.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from task import rfc3339
from task.apps.fire_keys import FireKeys
from task.apps.sender import TaskSender
from task.errors import BusError, ConfigError, LedgerError
from task.flow.alerts import AlertKind, Alerts
from task.flow.file_phases import FileStats, file_task
from task.flow.loader import WorkflowSet
from task.flow.phase_tasks import child_tasks, cron_tasks
from task.flow.store import Event, FileRecord, TaskEvent, TaskRow, TaskStore
from task.flow.template import MissingMeta
from task.flow.workflow import Phase
from task.ledger.base import Ledger, ScheduleKind
from task.result import Result
from task.task import Task

__all__ = ["FlowEngine", "retry_count"]

logger = logging.getLogger(__name__)

#: Wait before a retry when the rule has no ``retry_delay`` (Go: one second, no jitter).
DEFAULT_RETRY_DELAY = 1.0
#: Jitter added to a ``retry_delay``: up to this fraction of it (Go's ``jitterPercent(d, 40)``).
JITTER = 0.4
#: Seconds a released retry whose send failed waits before it is tried again.
SEND_AGAIN_AFTER = 5.0
#: Fire-key rule names of children and incomplete alerts (cron phases use their own).
CHILD_KEYS = "flow-child"
INCOMPLETE_KEYS = "flow-incomplete"
#: Seconds before ``now - task_ttl`` the first look for incomplete tasks after a start reads
#: from (the flow app looks once a minute; later looks start where the previous one stopped).
INCOMPLETE_LOOKBACK = 60.0
#: Unfinished tasks read from the store at once.
INCOMPLETE_PAGE = 1000


def retry_count(task: Task) -> int:
    """How often the task was retried already (``retry`` in its meta; junk counts as 0)."""
    text = task.get_meta("retry", "0")
    return int(text) if text.isdigit() else 0


def event(task: Task, kind: Event, at: datetime, *, parent: str = "", attempt: int = 0) -> TaskEvent:
    """The store's record of ``task`` at ``at``."""
    return TaskEvent.of(task, kind, at.timestamp(), parent=parent,
                        attempt=attempt or retry_count(task))


class FlowEngine:
    """Turns done tasks, cron ticks and files into the tasks of their workflows.

    ``sender`` sends what is new (recording it in the ledger first); ``ledger`` holds the
    retries and the fire keys; ``clock`` returns aware datetimes (a test's simulated time).
    Methods that send raise ``BusError`` when the bus refuses, so the caller gives the done
    task back to the bus instead of losing what it starts.
    """

    def __init__(
        self,
        workflows: WorkflowSet,
        sender: TaskSender,
        *,
        ledger: Ledger,
        store: TaskStore,
        alerts: Alerts,
        clock: Callable[[], datetime],
        failed_topic: str = "flow-failed",
        task_ttl: float = 4 * 3600.0,
        key_ttl: float = 86400.0,
        owner: str = "",
    ) -> None:
        self.workflows = workflows
        self.sender = sender
        self.ledger = ledger
        self.store = store
        self.alerts = alerts
        self.clock = clock
        self.failed_topic = failed_topic
        self.task_ttl = task_ttl
        self.fire_keys = FireKeys(ledger, ttl=key_ttl, owner=owner)
        #: incomplete alerts keep their key as long as the store keeps the task
        self.incomplete_keys = FireKeys(ledger, ttl=max(key_ttl, 40 * 86400.0), owner=owner)
        #: task types whose retries this engine scheduled (besides the phases' topics)
        self._retry_types: set[str] = set()
        #: where the previous look for incomplete tasks stopped (Unix seconds); None before it
        self._checked_until: float | None = None
        self._pending: list[TaskEvent] = []
        self._writing = asyncio.Lock()
        self.counts = {k: 0 for k in (
            "done", "ignored", "children", "not_ready", "retries", "released", "failed",
            "alerted", "warned", "cron_tasks", "file_tasks", "files_unmatched", "fired_elsewhere", "incomplete", "store_errors",
            "ledger_errors", "send_errors")}

    # -- recording ---------------------------------------------------------------------------

    async def record(self, events: Sequence[TaskEvent]) -> None:
        """Write ``events`` to the store, and return once they are written; a store failure
        is logged and counted, not raised (the store is the record, the bus and ledger carry
        the work).

        Group commit: events recorded while a write is under way are written together by
        the next one, so done tasks handled at once share a transaction.
        """
        if not events:
            return
        self._pending.extend(events)
        async with self._writing:
            if not self._pending:
                return  # the write that just ended took ours too
            batch, self._pending = self._pending, []
            try:
                await self.store.record(batch)
            except Exception as err:  # noqa: BLE001 - the workflow goes on without its record
                self.counts["store_errors"] += 1
                logger.error("cannot record %d task events in the store: %s", len(batch), err)

    async def send_new(self, tasks: Sequence[Task], kind: Event = Event.CREATED, *,
                       parent: str = "", skip_known: bool = False) -> int:
        """Send tasks a phase made (recording each in the ledger, then the store); with
        ``skip_known`` a task the ledger holds already is not sent. How many were sent.

        Raises:
            BusError: the bus refused one; those before it were sent.
        """
        now = self.clock()
        sent = 0
        for task in tasks:
            if not await self.sender.send(task, task.type, skip_known=skip_known):
                continue
            sent += 1
            await self.record([event(task, kind, now, parent=parent)])
        return sent

    # -- done tasks --------------------------------------------------------------------------

    async def handle_done(self, done: Task) -> None:
        """Act on one done task (see the module docstring).

        Raises:
            BusError: a child, a failed task or an alert could not be sent; the caller gives
                the done task back to the bus (what was sent is not sent twice).
            LedgerError: the ledger refused a retry; likewise.
        """
        workflow = done.get_meta("workflow")
        if not workflow:
            self.counts["ignored"] += 1
            return
        self.counts["done"] += 1
        now = self.clock()
        await self.record([event(done, Event.DONE, now)])
        result = done.result
        if result == Result.COMPLETE:
            await self._complete(done, workflow)
        elif result == Result.ERROR:
            await self._error(done, workflow)
        elif result == Result.ALERT:
            self.counts["alerted"] += 1
            await self.alerts.raise_alert(AlertKind.ALERT, done, done.msg or "the worker raised an alert")
        elif result == Result.WARN:
            self.counts["warned"] += 1
        else:
            logger.warning("task %s (%s) has result %r, which flow does not know: recorded only",
                           done.id, done.type, result)

    async def _complete(self, done: Task, workflow: str) -> None:
        children = self.workflows.children(done.type, done.job, workflow)
        if not children:
            logger.debug("task %s (%s) of %s starts no child", done.id, done.type, workflow)
        parent = f"{done.type}:{done.job}" if done.job else done.type
        meta = {k: v[0] for k, v in done.meta_values().items() if v}
        for phase in children:
            missing = phase.rule.missing(meta)
            if missing:
                self.counts["not_ready"] += 1
                logger.info("task %s (%s) does not start %s: its meta lacks %s", done.id,
                            parent, phase.key, ", ".join(missing))
                continue
            try:
                tasks = child_tasks(phase, done, self.clock())
            except (MissingMeta, ConfigError) as err:
                await self.alerts.raise_alert(
                    AlertKind.ALERT, done, f"child {phase.key} of {parent} not started: {err}")
                continue
            if not tasks:
                continue
            rule_key = f"{CHILD_KEYS}/{phase.workflow}/{phase.key}"
            if await self.fire_keys.take(rule_key, tasks[0]) is False:
                self.counts["fired_elsewhere"] += 1
                logger.info("child %s of task %s started by another replica", phase.key, done.id)
                continue
            try:
                self.counts["children"] += await self.send_new(tasks, Event.CHILD, parent=parent)
            except BusError:
                await self.fire_keys.give_back(rule_key, tasks[0])
                raise
            logger.info("task %s (%s) complete: started %s (%d tasks)", done.id, parent,
                        phase.key, len(tasks))

    async def _error(self, done: Task, workflow: str) -> None:
        phase = self.workflows.phase(done.type, done.job, workflow)
        if phase is None:
            logger.warning("task %s: no phase %s%s in workflow %r; not retried", done.id,
                           done.type, f":{done.job}" if done.job else "", workflow)
            return
        retried = retry_count(done)
        if retried < phase.retry:
            await self._schedule_retry(done, phase, retried + 1)
            return
        failed = done.copy()
        failed.set_meta("retry", "failed")
        failed.set_meta("retried", str(phase.retry))
        if self.failed_topic not in ("", "-"):
            await self.sender.producer.send(self.failed_topic, failed.to_json(), key=done.id or None)
        self.counts["failed"] += 1
        logger.info("task %s (%s) failed after %d retries: sent to %r", done.id, phase.key,
                    phase.retry, self.failed_topic)
        if not phase.rule.no_alert:
            await self.alerts.raise_alert(
                AlertKind.ERROR, failed, f"failed after {phase.retry} retries: {done.msg}")

    def retry_at(self, done: Task, phase: Phase, retry: int) -> datetime:
        """When retry ``retry`` of ``done`` is due: ``retry_delay`` plus a jitter drawn from
        the task's id and the retry number, counted from when it ended."""
        now = self.clock()
        ended = done.ended_at
        base = ended if ended is not None and ended <= now else now
        if phase.rule.retry_delay is None:
            return base + timedelta(seconds=DEFAULT_RETRY_DELAY)
        delay = phase.rule.retry_delay.total_seconds()
        rng = random.Random(f"{done.type}/{done.id}/{retry}")
        return base + timedelta(seconds=delay * (1 + rng.uniform(0, JITTER)))

    async def _schedule_retry(self, done: Task, phase: Phase, retry: int) -> None:
        if await self._retried_already(done, retry):
            logger.info("task %s (%s) retry %d is scheduled already", done.id, phase.key, retry)
            return
        again = Task.new(done.type, done.info, id=done.id, job=phase.job or done.job or None)
        again.meta = done.meta
        again.created = rfc3339.format_utc(self.clock())
        again.set_meta("retry", str(retry))
        at = self.retry_at(done, phase, retry)
        if phase.rule.retry_delay is not None:
            again.set_meta("delayed", _go_duration((at - (done.ended_at or at)).total_seconds()))
        await self.ledger.schedule(again, None, at, topic=phase.topic, kind=ScheduleKind.FLOW)
        self._retry_types.add(again.type)
        self.counts["retries"] += 1
        now = self.clock()
        await self.record([event(again, Event.RETRIED, now, attempt=retry)])
        logger.info("task %s (%s) retry %d of %d at %s", done.id, phase.key, retry, phase.retry,
                    at.isoformat(timespec="seconds"))

    async def _retried_already(self, done: Task, retry: int) -> bool:
        """True when the store holds retry ``retry`` (or a later one) of this task: the same
        done task read again, here or by another replica."""
        if not done.id:
            return False
        try:
            chain = await self.store.chain(done.id)
        except Exception as err:  # noqa: BLE001 - better a retry twice than none
            self.counts["store_errors"] += 1
            logger.error("cannot read the chain of task %s: %s", done.id, err)
            return False
        return any(e.event == Event.RETRIED and e.type == done.type and e.attempt >= retry
                   for e in chain)

    async def release_due(self) -> int:
        """Send every retry whose time has come (the ledger moves each from its schedule to
        the outstanding records in one step, so one replica sends it); how many were sent."""
        now = self.clock()
        types = sorted({p.topic for p in self.workflows.phases()} | self._retry_types)
        sent = 0
        for task_type in types:
            try:
                due = await self.ledger.due(task_type, now, kind=ScheduleKind.FLOW)
            except LedgerError as err:
                self.counts["ledger_errors"] += 1
                logger.error("cannot read due retries of %r from the ledger: %s", task_type, err)
                continue
            for entry in due:
                try:
                    await self.sender.producer.send(entry.topic, entry.task.to_json(),
                                                    key=entry.task.id or None)
                except BusError as err:
                    self.counts["send_errors"] += 1
                    logger.error("cannot send retry of task %s, trying again later: %s",
                                 entry.task.id, err)
                    await self.ledger.schedule(entry.task, entry.task_list,
                                               now + timedelta(seconds=SEND_AGAIN_AFTER),
                                               topic=entry.topic, kind=ScheduleKind.FLOW)
                    continue
                sent += 1
                self.counts["released"] += 1
                logger.info("task %s (%s) retry %s sent", entry.task.id, entry.task.type,
                            entry.task.get_meta("retry", "?"))
        return sent

    # -- cron ----------------------------------------------------------------------------------

    async def fire(self, phase: Phase, tick: datetime) -> int:
        """Send the tasks of cron ``phase`` for ``tick`` unless another replica did; how
        many were sent here.

        Raises:
            BusError: the bus refused a task (the tick's key is given back).
        """
        try:
            tasks = cron_tasks(phase, tick, self.clock())
        except (MissingMeta, ConfigError) as err:
            probe = Task.new(phase.topic, phase.template, id="", job=phase.job or None,
                             meta={"workflow": phase.workflow})
            await self.alerts.raise_alert(AlertKind.ALERT, probe,
                                          f"cron phase {phase.key} of {phase.workflow} made no task: {err}")
            return 0
        if not tasks:
            return 0
        rule_key = f"flow/{phase.workflow}/{phase.key}"
        held = await self.fire_keys.take(rule_key, tasks[0])
        if held is False:
            self.counts["fired_elsewhere"] += 1
            logger.info("cron %s of %s at %s: fired by another replica", phase.key,
                        phase.workflow, rfc3339.format_utc(tick))
            return 0
        try:
            # without the key (ledger down) the ledger's own record still stops a duplicate
            sent = await self.send_new(tasks, skip_known=held is None)
        except BusError:
            if held:
                await self.fire_keys.give_back(rule_key, tasks[0])
            raise
        await self.fire_keys.sweep(rule_key, self.clock().timestamp())
        self.counts["cron_tasks"] += sent
        logger.info("cron %s of %s at %s: sent %d tasks", phase.key, phase.workflow,
                    rfc3339.format_utc(tick), sent)
        return sent

    # -- files ---------------------------------------------------------------------------------

    async def file_landed(self, stats: FileStats) -> list[str]:
        """Start every file phase whose glob matches ``stats.path``; the ids of the tasks
        sent here (a task another replica sent is skipped). The file is recorded in the store.

        Raises:
            BusError: the bus refused a task (its key is given back).
        """
        now = self.clock()
        matched: list[Phase] = []
        ids: list[str] = []
        for phase in self.workflows.file_phases():
            if not phase.rule.matches(stats.path):
                continue
            matched.append(phase)
            try:
                task = file_task(phase, stats, now)
            except MissingMeta as err:
                probe = Task.new(phase.topic, stats.path, id="", job=phase.job or None,
                                 meta={"workflow": phase.workflow, "file": stats.path})
                await self.alerts.raise_alert(
                    AlertKind.ALERT, probe, f"file phase {phase.key} not started: {err}")
                continue
            rule_key = f"flow-file/{phase.workflow}/{phase.key}"
            held = await self.fire_keys.take(rule_key, task)
            if held is False:
                self.counts["fired_elsewhere"] += 1
                continue
            try:
                await self.send_new([task])
            except BusError:
                if held:
                    await self.fire_keys.give_back(rule_key, task)
                raise
            ids.append(task.id)
            self.counts["file_tasks"] += 1
        if not matched:
            self.counts["files_unmatched"] += 1
            logger.info("file %s matches no phase", stats.path)
        try:
            await self.store.record_file(FileRecord(
                at=now.timestamp(), path=stats.path, size=stats.size,
                phases=tuple(f"{p.workflow}:{p.key}" for p in matched), task_ids=tuple(ids)))
        except Exception as err:  # noqa: BLE001 - the tasks are sent; only the record is lost
            self.counts["store_errors"] += 1
            logger.error("cannot record file %s in the store: %s", stats.path, err)
        return ids

    # -- incomplete ----------------------------------------------------------------------------

    async def check_incomplete(self) -> int:
        """Alert once for each task created more than ``task_ttl`` ago and not done; how many
        alerts were raised.

        Each check reads only the tasks first seen since the previous check's cutoff (the
        first check after a start: ``INCOMPLETE_LOOKBACK`` further back), page by page, so
        a thousand tasks stuck for days never hide newer ones and a day-partitioned store
        reads only the days between. A failed read keeps the cutoff: the next check reads
        the same tasks again, and the ledger's keys stop a second alert for any of them.
        """
        if self.task_ttl <= 0:
            return 0
        cutoff = self.clock().timestamp() - self.task_ttl
        after = cutoff - INCOMPLETE_LOOKBACK if self._checked_until is None else self._checked_until
        limit, raised = INCOMPLETE_PAGE, 0
        seen: set[tuple[str, str]] = set()
        while after < cutoff:
            try:
                rows = await self.store.unfinished(cutoff, created_after=after, limit=limit)
            except Exception as err:  # noqa: BLE001 - the next check tries again
                self.counts["store_errors"] += 1
                logger.error("cannot read unfinished tasks from the store: %s", err)
                return raised
            for row in rows:
                if (row.type, row.id) not in seen:
                    seen.add((row.type, row.id))
                    raised += await self._alert_incomplete(row)
            if len(rows) < limit:
                break
            if rows[-1].first > after:
                after = rows[-1].first  # the rows first seen at that instant come again: seen
            else:
                limit *= 2  # a whole page first seen at one instant: read more at once
        self._checked_until = max(cutoff, self._checked_until or cutoff)
        return raised

    async def _alert_incomplete(self, row: TaskRow) -> int:
        """Raise the incomplete alert for ``row`` unless a replica did: 1 when raised."""
        task = Task(type=row.type, id=row.id, job=row.job, created=row.created,
                    meta=f"workflow={row.workflow}" if row.workflow else "")
        if await self.incomplete_keys.take(f"{INCOMPLETE_KEYS}/{row.type}", task) is False:
            return 0
        self.counts["incomplete"] += 1
        await self.alerts.raise_alert(
            AlertKind.INCOMPLETE, task,
            f"created {row.created or '?'} and not done within {_go_duration(self.task_ttl)}")
        return 1

    def stats(self) -> dict[str, object]:
        """Counters for ``/stats``."""
        return {**self.counts, "fire_key_errors": self.fire_keys.errors,
                **self.alerts.stats()}


def _go_duration(seconds: float) -> str:
    """Seconds as Go prints a ``time.Duration`` to a second (``1m30s``, ``4h0m0s``)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
