"""The Launcher: takes messages from a consumer, runs a worker per task, sends done tasks.

Per message: parse, check the type, record ``started``, run the worker (timeout,
cancellation, heartbeats for long tasks), ``end``, send the done task (awaiting the bus's
confirmation), record ``done``, then ``ack``. A crash anywhere before ``ack`` means the bus
redelivers: the done task is sent before the original is forgotten, never after.

Concurrency is ``max_in_progress`` runner coroutines that each take the next message only
when free, so no message waits inside the Launcher and none is started after ``stop()``.
With a ``broadcast`` consumer (this instance's subscription to ``<topic>.all``), one more
runner takes its tasks, one at a time, through the same path: the main consumer is never
wrapped for it, so the per-message cost of ordinary tasks is the same with or without.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import monotonic
from time import time as wall_clock
from typing import TYPE_CHECKING, Any, Self

from task import rfc3339
from task.backoff import Backoff
from task.bus.base import Consumer, Message, Producer, no_ack
from task.bus.deadletter import dead_letter_envelope
from task.errors import BusError, InvalidTaskError
from task.health import HEALTH_KEY, IN_FLIGHT_KEY, in_flight, launcher_health
from task.ledger.base import Ledger
from task.ledger.recorder import LedgerRecorder
from task.log_limit import RateLimitedLog
from task.meta import merge_meta
from task.metrics import TaskDurations
from task.result import Result
from task.task import Task
from task.worker import MakeWorker, StopSignal, TaskContext, Worker

if TYPE_CHECKING:
    from task.backlog import BacklogReader
    from task.settings import WorkerSettings

__all__ = ["FORCED_CLOSE_MSG", "Launcher", "LauncherOptions"]

logger = logging.getLogger(__name__)

#: The msg of a task cancelled because it outlived ``worker_kill_time`` at shutdown.
FORCED_CLOSE_MSG = "worker forced to close"
#: Waits between the four attempts to send a done task (0.05 s, 0.25 s, 1 s) before the
#: message is given back to the bus.
SEND_RETRY = Backoff(first=0.05, factor=5.0, cap=1.0)
SEND_TRIES = 4
_SEND_WAITS = (*SEND_RETRY.delays(SEND_TRIES), None)  # computed once: this is the hot path
#: Seconds a runner may go on without waiting before it lets the event loop run others.
YIELD_EVERY = 0.005
#: ``Worker.worker_meta``: a class that keeps it has its workers' meta in ``_meta``
_BASE_WORKER_META = Worker.worker_meta
#: Deliveries of a message that keeps failing in taskbus itself (no done task could be built
#: or sent) before it goes to the dead-letter topic instead of looping for ever.
POISON_ATTEMPTS = 5
#: Bodies whose failures are counted in-process, for buses that do not count deliveries.
POISON_MEMORY = 10_000


@dataclass
class LauncherOptions:
    """How a Launcher runs; the names are the Go launcher's."""

    #: tasks run at once; also the consumer's prefetch
    max_in_progress: int = 1
    #: seconds in-flight tasks get to finish after stop() before they are cancelled
    worker_kill_time: float = 10.0
    #: stop after exactly this many tasks (0: no limit)
    lifetime_workers: int = 0
    done_topic: str = "done"
    #: the task type this worker does; used for type checks and as the ledger's task list
    task_type: str = ""
    #: end tasks of another type as error without running them
    reject_bad_type: bool = False
    #: acknowledge tasks of another type without running them or sending anything
    ignore_bad_type: bool = False
    #: seconds a task may run (0: no limit); then it ends as error
    task_timeout: float = 0.0
    #: topic for messages that are not tasks (empty: they are only counted and logged)
    dead_letter_topic: str = ""
    #: seconds between in_progress()/ledger.touch for a task still running
    heartbeat_interval: float = 5.0
    #: the consumer's topic, for logs, stats and dead letters
    topic: str = ""
    #: the consumer's channel (queue group, consumer group), for logs and stats
    channel: str = ""
    #: seconds (times the attempt) before a message taskbus itself failed to handle comes back
    poison_delay: float = 1.0


class _InFlight(TaskContext):
    """A message between parse and settlement, and the context its worker gets: one object
    per message instead of two. Heartbeats, stats and the stop read the Launcher's part.

    Sets ``TaskContext``'s attributes itself: a call to its ``__init__`` costs more per
    message than the three assignments (``test_launcher_context`` checks they stay the same).
    """

    __slots__ = ("_killed", "_last_beat", "_message", "_runner", "_working")

    def __init__(self, message: Message, task: Task, stop: StopSignal,
                 runner: asyncio.Task[Any] | None, started: float) -> None:
        self.task = task
        self._launcher_stop = stop
        self._task_stop = None
        self._message = message
        self._runner = runner
        self._last_beat = started
        self._working = False  #: the worker's do_task is running
        self._killed = False  #: cancelled by the stop after worker_kill_time


class Launcher:
    """Runs a worker class against a bus. ``await run()`` blocks until stopped or drained."""

    def __init__(
        self,
        make_worker: MakeWorker,
        consumer: Consumer,
        producer: Producer,
        options: LauncherOptions | None = None,
        ledger: Ledger | None = None,
        *,
        after_done: Callable[[Task], Awaitable[object]] | None = None,
        broadcast: Consumer | None = None,
    ) -> None:
        self.make_worker = make_worker
        #: this instance's broadcast subscription, read by a runner of its own (or None)
        self.broadcast = broadcast
        #: a broadcast subscription that cannot start fails the start (asked for explicitly),
        #: rather than being logged and done without (on by default)
        self.broadcast_required = False
        self._broadcast_stopped = False
        #: called with each done task once it is sent, before the ack (recurrent tasks)
        self.after_done = after_done
        self.consumer = consumer
        self.producer = producer
        self.options = options or LauncherOptions()
        self.ledger = ledger
        self._recorder = LedgerRecorder(ledger) if ledger is not None else None
        #: close the ledger at the end only when from_settings opened it
        self.owns_ledger = False
        #: the topic's backlog in stats(), read from the bus when looked at (from_settings sets it)
        self.backlog: BacklogReader | None = None
        self._stop_signal = StopSignal()
        self._stop_requested: asyncio.Event | None = None
        #: tasks between parse and settlement: their workers run, or their done tasks are sent
        self._in_flight: set[_InFlight] = set()
        self._claimed = 0
        #: ordinary tasks run, counted only with a lifetime (broadcast tasks do not count)
        self._lifetime_ran = 0
        self._last_yield = 0.0
        self._yielding = False
        self._executor: ThreadPoolExecutor | None = None
        self._is_async = _has_async_do_task(make_worker)
        #: for a factory function: whether each class it returns has an async do_task
        self._async_by_class: dict[type, bool] = {}
        #: failures per body of messages taskbus itself could not handle (see POISON_ATTEMPTS)
        self._poison_counts: OrderedDict[bytes, int] = OrderedDict()
        self._warn_wrong_type = RateLimitedLog(logger, clock=monotonic)  # _handle reads it
        self._debug = False
        # read from the options once run() starts: attribute look-ups on the hot path
        #: the task type this worker does, also the ledger's task list (empty: each task's type)
        self._task_type = self.options.task_type
        self._done_topic = self.options.done_topic
        #: an async do_task without a timeout: awaited inline, without ``_call``
        self._inline_call = False
        #: Worker classes whose workers' meta is their ``_meta`` (see ``_meta_of``)
        self._plain_meta: set[type] = set()
        # stats
        self._began = time.time()
        self._consumed = 0
        self._finished = 0
        self._invalid = 0
        self._ignored = 0
        self._rejected = 0
        self._redelivered = 0
        self._send_failures = 0
        self._ack_failures = 0
        self._dead_lettered = 0
        self._wrong_type = 0
        self._handler_errors = 0
        #: per type and result, for the /metrics histogram
        self.durations = TaskDurations()

    @classmethod
    def from_settings(cls, make_worker: MakeWorker, settings: WorkerSettings) -> Launcher:
        """A Launcher wired from ``taskbus worker`` settings: buses and ledger by URL.

        Raises:
            ConfigError: a bad URL, an unknown bus or ledger, a missing extra.
        """
        from task.backlog import BacklogReader
        from task.bus.broadcast import open_worker_broadcast
        from task.bus.priority import open_worker_consumer, split_topics
        from task.bus.registry import open_producer
        from task.ledger.registry import open_ledger

        task_type = settings.type or str(getattr(make_worker, "task_type", "") or "")
        topics = split_topics(settings.topic or task_type)  # high,default,low: priority order
        topic = topics[0]  # logs, stats, the backlog and dead letters name the first
        channel = settings.channel or task_type or topic
        credentials = settings.credentials()
        consumer = open_worker_consumer(  # priorities: task/bus/priority.py
            settings.bus, topics, channel=channel, prefetch=settings.max_in_progress,
            credentials=credentials,
        )
        explicit = "broadcast" in settings.model_fields_set  # on by default, where it can work
        broadcast = open_worker_broadcast(
            settings.bus, task_type or topic, instance=settings.instance, credentials=credentials,
            explicit=explicit,
        ) if settings.broadcast else None
        producer = open_producer(settings.producer_url, credentials=credentials)
        options = LauncherOptions(
            max_in_progress=settings.max_in_progress,
            worker_kill_time=settings.worker_kill_time,
            lifetime_workers=settings.lifetime,
            done_topic=settings.done_topic,
            task_type=task_type,
            reject_bad_type=settings.reject_bad_type,
            ignore_bad_type=settings.ignore_bad_type,
            task_timeout=settings.task_timeout,
            dead_letter_topic=settings.dead_letter_topic,
            heartbeat_interval=settings.heartbeat_interval,
            topic=topic,
            channel=channel,
        )
        ledger = open_ledger(settings.ledger) if settings.ledger else None
        launcher = cls(make_worker, consumer, producer, options, ledger, broadcast=broadcast)
        launcher.broadcast_required = explicit
        launcher.owns_ledger = ledger is not None
        launcher.backlog = BacklogReader(settings.bus, topic, channel, credentials=credentials)
        return launcher

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop taking messages; in-flight tasks get ``worker_kill_time`` to finish. Idempotent."""
        self._stop_signal.set()
        if self._stop_requested is not None:
            self._stop_requested.set()
        await self.consumer.stop()
        await self._stop_broadcast()

    async def _stop_broadcast(self) -> None:
        """Stop taking broadcast tasks (once: a second ``stop()`` of a JetStream consumer
        closes it, and the broadcast task still running must be acknowledged first)."""
        if self.broadcast is not None and not self._broadcast_stopped:
            self._broadcast_stopped = True
            await self.broadcast.stop()

    @property
    def stopping(self) -> bool:
        return self._stop_signal.is_set()

    async def run(self) -> None:
        """Run until stopped, ``lifetime_workers`` tasks done, or the bus is finished.

        Raises:
            BusError: the consumer failed beyond recovery.
        """
        self._stop_requested = asyncio.Event()
        if self._stop_signal.is_set():
            self._stop_requested.set()
        self._began = time.time()
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._task_type = self.options.task_type
        self._done_topic = self.options.done_topic
        self._inline_call = bool(self._is_async) and not self.options.task_timeout
        setup = getattr(self.make_worker, "setup", None)
        await self._start_consumers()
        try:
            await self.producer.start()
            if setup is not None:
                await _maybe_await(setup())
        except BaseException:
            await self._close(had_setup=False)  # nothing is left open behind a failed start
            raise
        heartbeat = asyncio.create_task(self._heartbeat(), name="launcher-heartbeat")
        runners = [
            asyncio.create_task(self._runner(), name=f"launcher-runner-{i}")
            for i in range(max(1, self.options.max_in_progress))
        ]
        all_done: asyncio.Future[Any] = asyncio.gather(*runners)
        if self.broadcast is not None:
            runners.append(asyncio.create_task(self._broadcast_runner(self.broadcast),
                                               name="launcher-broadcast"))
        stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({all_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if self.broadcast is not None:  # stopped or drained: broadcasts never keep us running
                await self._stop_broadcast()  # its msg() returns None; a task it runs finishes
                all_done = asyncio.gather(all_done, runners[-1])
            if not all_done.done():
                await self._finish_in_flight(all_done)
            if all_done.done():
                all_done.result()  # re-raise a runner's failure (a failed bus)
        finally:
            stop_wait.cancel()
            heartbeat.cancel()
            for runner in runners:
                runner.cancel()
            await asyncio.gather(all_done, heartbeat, stop_wait, return_exceptions=True)
            await self._close(setup is not None)

    async def _start_consumers(self) -> None:
        """Start the main consumer and the broadcast subscription together: on Kafka and
        JetStream the latter creates a topic or consumer, which then costs no start-up time
        of its own. A broadcast subscription that fails is logged and done without, unless
        it was asked for (``broadcast_required``).

        Raises:
            BusError: the main consumer (or a required broadcast one) cannot start.
        """
        broadcast = self.broadcast
        if broadcast is None:
            await self.consumer.start()
            return
        main, extra = await asyncio.gather(self.consumer.start(), broadcast.start(), return_exceptions=True)
        failed = main if isinstance(main, BaseException) else None
        if failed is None and isinstance(extra, BaseException) and (
                self.broadcast_required or not isinstance(extra, Exception)):
            failed = extra
        if failed is not None:
            await broadcast.stop()
            await self.consumer.stop()
            raise failed
        if isinstance(extra, BaseException):
            await broadcast.stop()
            self.broadcast = None
            logger.error("broadcast tasks of %r will not reach this worker: %s (--no-broadcast "
                         "does without them)", self.options.task_type or self.options.topic, _describe(extra))

    async def _broadcast_runner(self, broadcast: Consumer) -> None:
        """Runs this instance's broadcast tasks, one at a time, beside the ``max_in_progress``
        runners and through the same ``_handle`` (ledger entry, done task, ack or nack). They
        do not count towards ``lifetime_workers``. A failing subscription ends only this."""
        runner = asyncio.current_task()
        while not self._stop_signal.raised:
            try:
                message = await broadcast.msg()
            except Exception as err:  # noqa: BLE001 - the ordinary tasks go on without it
                logger.error("broadcast tasks no longer reach this worker: %s", _describe(err))
                return
            if message is None:
                return
            try:
                await self._handle(message, runner)
            except Exception as err:  # noqa: BLE001 - one message never ends the launcher
                self._unexpected(err, "handling a broadcast message")
                await self._poison(message, err)

    async def _finish_in_flight(self, all_done: asyncio.Future[Any]) -> None:
        """After stop(): wait ``worker_kill_time``, then cancel workers still running."""
        done, _ = await asyncio.wait({all_done}, timeout=self.options.worker_kill_time)
        if done:
            return
        killed = 0
        for slot in list(self._in_flight):
            if slot._working and slot._runner is not None:
                slot._killed = True
                slot.stop_task()
                slot._runner.cancel()
                killed += 1
        if killed:
            logger.warning("cancelled %d task(s) still running after %.1fs", killed, self.options.worker_kill_time)
        done, _ = await asyncio.wait({all_done}, timeout=max(5.0, self.options.worker_kill_time))
        if not done:
            logger.error("giving up on %d message(s) not settled after the stop; the bus will "
                         "deliver them again", len(self._in_flight))

    async def _close(self, had_setup: bool) -> None:
        try:
            teardown = getattr(self.make_worker, "teardown", None)
            if had_setup and teardown is not None:
                await _maybe_await(teardown())
        except Exception:
            logger.exception("worker teardown failed")
        await self.consumer.stop()
        if self.broadcast is not None:
            await self.broadcast.stop()  # removes this instance's subscription
        await self.producer.stop()
        if self._recorder is not None:
            await self._recorder.close()
        if self.ledger is not None and self.owns_ledger:
            await self.ledger.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ the work

    async def _runner(self) -> None:
        lifetime = self.options.lifetime_workers
        runner = asyncio.current_task()
        stop = self._stop_signal
        take = self.consumer.msg
        while not stop.raised:
            if lifetime:  # only a lifetime counts the messages claimed
                if self._claimed >= lifetime:
                    return
                self._claimed += 1
            message = await take()
            if message is None:
                if lifetime:
                    self._claimed -= 1
                return
            try:
                ran = await self._handle(message, runner)
            except Exception as err:  # noqa: BLE001 - one message never ends the launcher
                self._unexpected(err, "handling a message")
                await self._poison(message, err)
                ran = False
            if lifetime and not ran:
                self._claimed -= 1
            elif lifetime:
                self._lifetime_ran += 1
                if self._lifetime_ran >= lifetime:
                    stop.set()
                    assert self._stop_requested is not None
                    self._stop_requested.set()
                    return
            if self._yielding or monotonic() - self._last_yield >= YIELD_EVERY:
                await self._let_others_run()  # checked inline: a coroutine per message costs

    async def _let_others_run(self) -> None:
        """Yield to the event loop now and then. A bus and a worker that never wait (the file
        bus and ``nop``) would otherwise keep the loop to one runner for the whole backlog:
        SIGTERM, ``/stats`` and heartbeats would be served only once the file is drained."""
        if self._yielding:  # another runner yields this turn: every runner does, once
            await asyncio.sleep(0)
        elif time.monotonic() - self._last_yield >= YIELD_EVERY:
            self._yielding = True
            await asyncio.sleep(0)  # the loop polls signals and sockets before this returns
            self._yielding = False
            self._last_yield = time.monotonic()

    async def _handle(self, message: Message, runner: asyncio.Task[Any] | None) -> bool:
        """Process one message: run its task, send the done task, settle the message. True
        when a task ran (it counts towards the lifetime).

        One coroutine for the path every message takes (the rare ones call out): each extra
        ``await`` of a coroutine costs a frame per message, a visible share of a no-op task."""
        self._consumed += 1
        if message.attempt > 1:
            self._redelivered += 1
        try:
            task = Task.from_json(message.body)
        except InvalidTaskError as err:
            await self._invalid_message(message, str(err))
            return False
        now = monotonic()
        expected = self._task_type
        if expected and task.type != expected:
            if self.options.ignore_bad_type or self.options.reject_bad_type:
                await self._refuse_other_type(message, task)
                return False
            self._wrong_type += 1  # Go runs it too: counted and warned, no coroutine
            if now < self._warn_wrong_type.quiet_until:  # its clock: one reading for both
                self._warn_wrong_type.hold_back()
            else:
                self._warn_other_type(task)
        slot = _InFlight(message, task, self._stop_signal, runner, now)
        # the slot lives until the message is settled, so heartbeats keep its lease while the
        # done task is sent (a send may retry for longer than the bus's ack wait)
        in_flight = self._in_flight
        in_flight.add(slot)
        try:
            try:
                body = await self._run_task(slot)
            except Exception as err:  # noqa: BLE001 - ours or the worker's: the task still ends
                self._unexpected(err, f"finishing task {task.id or task.type}")
                crash_body = self._done_after_crash(message, err)
                if crash_body is None:
                    await self._poison(message, err)
                    return True
                body = crash_body
            try:
                try:  # the first attempt inline: one coroutine less per message on the hot path
                    await self.producer.send(self._done_topic, body, key=task.id or None)
                except BusError:
                    if not await self._send_done(body, task.id, retry=True):
                        await self._give_back(message)
                        return True
            except Exception as err:  # noqa: BLE001 - not a bus outage (that is a BusError): a bug
                self._unexpected(err, f"sending the done task of {task.id or task.type}")
                await self._poison(message, err)
                return True
            if self._recorder is not None:
                try:
                    self._recorder.done(self._task_type or task.type, task.id)
                except Exception as err:  # noqa: BLE001 - the ledger never fails a task
                    self._unexpected(err, f"recording task {task.id} as done")
            if self.after_done is not None:
                try:
                    await self.after_done(task)
                except Exception as err:  # noqa: BLE001 - a hook never fails a task or the launcher
                    self._unexpected(err, f"after task {task.id or task.type} was done")
            if type(message).ack is not no_ack:  # nothing to acknowledge: no coroutine either
                try:
                    await message.ack()
                except Exception as err:  # noqa: BLE001 - counted and logged; the launcher goes on
                    self._ack_failed(err)
            return True
        finally:
            in_flight.discard(slot)

    async def _refuse_other_type(self, message: Message, task: Task) -> None:
        """A task of another type than the worker's, with ``ignore_bad_type`` or
        ``reject_bad_type`` set: ignored, or rejected with an error done task; settled."""
        opts = self.options
        if opts.ignore_bad_type:
            self._ignored += 1
            await self._ack(message)
            return
        self._rejected += 1
        task.end(Result.ERROR, f"rejected: task type {task.type!r} does not match worker type {opts.task_type!r}")
        if await self._send_done(task.to_json(), task.id):
            await self._ack(message)
        else:
            await self._give_back(message)

    def _warn_other_type(self, task: Task) -> None:
        """A task of another type than the worker's runs anyway, as in Go; say so, since a
        task on the wrong topic is usually a mistake (once a minute in a flood)."""
        self._warn_wrong_type(
            "task %s of type %r arrived on %r for worker type %r and runs anyway; set "
            "reject_bad_type or ignore_bad_type to refuse such tasks",
            task.id or "(no id)", task.type, self.options.topic, self.options.task_type,
        )

    async def _run_task(self, slot: _InFlight) -> bytes:
        """Run the worker on the slot's task and return the done task's JSON.

        Builds the worker and runs it; every failure of the worker's becomes an error result.
        One coroutine for all of it: each extra ``await`` of a coroutine costs a frame per
        message, and this is most of a no-op task's time. One clock reading per time stamp
        gives both the stamp and the duration.
        """
        task = slot.task
        if self._recorder is not None:
            self._recorder.started(task, self._task_type or task.type)
        began = wall_clock()
        started = task.started = rfc3339.utc_text(began)  # Task.start() inlined: the hot path
        worker: Worker | None = None
        try:
            worker = self.make_worker(task.info)
        except Exception as err:  # user code: any failure ends the task, not us
            logger.warning("cannot make a worker for task %s: %s", task.id or task.type, _describe(err), exc_info=err)
            outcome: object = Result.ERROR, f"cannot make worker: {_describe(err)}"
        else:
            slot._working = True
            try:
                if self._inline_call:  # an async do_task without a timeout: the common case
                    outcome = await worker.do_task(slot)
                else:
                    outcome = await self._call(worker, slot)
            except _TaskTimedOut:
                slot.stop_task()
                outcome = Result.ERROR, f"task timed out after {self.options.task_timeout:g}s"
            except asyncio.CancelledError:
                if not slot._killed:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                outcome = Result.ERROR, FORCED_CLOSE_MSG
            except Exception as err:  # a worker that raises ends its task as error
                logger.warning("worker raised for task %s: %s", task.id or task.type, _describe(err), exc_info=err)
                outcome = Result.ERROR, _describe(err)
            finally:
                slot._working = False
        ended = wall_clock()
        text: str | None = None
        if type(outcome) is tuple and len(outcome) == 2:  # the common shape, checked inline
            result, msg = outcome
            if type(msg) is str:
                kind = type(result)
                if kind is Result:  # its value: hashing an enum member for a look-up costs more
                    text = result._value_
                elif kind is str:
                    text = result
        if text is None:
            result, msg = _check_outcome(outcome)
            text = str(result)
        task.result = text  # Task.end() inlined
        task.msg = msg
        task.ended = started if int(ended) == int(began) else rfc3339.utc_text(ended)
        if worker is not None and (type(worker) not in self._plain_meta or worker._meta):
            worker_meta = self._meta_of(worker)
            if worker_meta:
                task.meta = merge_meta(task.meta, worker_meta)
        body = task.to_json()
        self._count_finished(task, max(0.0, ended - began))  # a wall clock may step back
        return body

    def _meta_of(self, worker: object) -> dict[str, list[str]] | None:
        """The meta a worker set (``_worker_meta``). A ``Worker`` class that keeps the base's
        ``worker_meta`` is remembered: its workers' meta is then just ``_meta``, checked
        inline, and set by few tasks."""
        cls = type(worker)
        if getattr(cls, "worker_meta", None) is _BASE_WORKER_META:
            self._plain_meta.add(cls)
        return _worker_meta(worker)

    def _count_finished(self, task: Task, seconds: float) -> None:
        self.durations.observe(task.type, task.result, seconds)  # also the results and mean
        self._finished += 1
        if self._debug:
            logger.debug("task %s type=%s result=%s in %.3fs: %s",
                         task.id or "(no id)", task.type, task.result, seconds, task.msg)

    def _unexpected(self, err: BaseException, doing: str) -> None:
        """An exception nobody planned for: logged once with its traceback, counted."""
        self._handler_errors += 1
        logger.error("unexpected error while %s: %s", doing, _describe(err), exc_info=err)

    def _done_after_crash(self, message: Message, err: BaseException) -> bytes | None:
        """The done task of a message whose handling failed: the original task as it came,
        ended as error with the exception's text. None when even that cannot be built."""
        try:
            task = Task.from_json(message.body)
            task.start()
            task.end(Result.ERROR, f"taskbus could not finish the task: {_describe(err)}")
            body = task.to_json()
        except Exception as again:  # noqa: BLE001 - the message goes back to the bus instead
            logger.error("cannot build a done task after the error: %s", _describe(again))
            return None
        self._count_finished(task, 0.0)
        return body

    async def _poison(self, message: Message, err: BaseException) -> None:
        """A message taskbus itself could not handle: give it back with a growing delay, and
        after ``POISON_ATTEMPTS`` deliveries dead-letter it, so it cannot loop for ever."""
        attempts = max(message.attempt, self._count_poison(message.body))
        if attempts < POISON_ATTEMPTS:
            await self._give_back(message, self.options.poison_delay * attempts)
            return
        self._poison_counts.pop(message.body, None)
        reason = f"taskbus failed to handle it {attempts} times: {_describe(err)}"
        await self._dead_letter(message, reason)

    def _count_poison(self, body: bytes) -> int:
        count = self._poison_counts.pop(body, 0) + 1
        self._poison_counts[body] = count
        if len(self._poison_counts) > POISON_MEMORY:
            self._poison_counts.popitem(last=False)
        return count

    async def _call(self, worker: Worker, ctx: TaskContext) -> object:
        is_async = self._is_async
        if is_async is None:  # a factory function: look at the class it returned, once
            cls = type(worker)
            is_async = self._async_by_class.get(cls)
            if is_async is None:
                is_async = self._async_by_class[cls] = inspect.iscoroutinefunction(worker.do_task)
        if is_async:
            pending: Awaitable[object] = worker.do_task(ctx)
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, self.options.max_in_progress) + (self.broadcast is not None),
                    thread_name_prefix="taskbus-worker"
                )
            pending = asyncio.get_running_loop().run_in_executor(self._executor, worker.do_task, ctx)
        if self.options.task_timeout > 0:
            deadline = asyncio.timeout(self.options.task_timeout)
            try:
                async with deadline:
                    return await pending
            except TimeoutError:
                if deadline.expired():
                    raise _TaskTimedOut from None
                raise  # the worker's own TimeoutError (a socket, a client): its message stands
        return await pending

    async def _send_done(self, body: bytes, task_id: str, *, retry: bool = False) -> bool:
        """Send a done task, retrying a bus failure a few times; False when it could not be sent.
        With ``retry`` the first attempt already failed: start with the first wait.

        Raises:
            Exception: anything but a ``BusError`` from the producer (a bug, not an outage).
        """
        if retry:
            await asyncio.sleep(_SEND_WAITS[0] or 0)
        for delay in _SEND_WAITS[1:] if retry else _SEND_WAITS:
            try:
                await self.producer.send(self._done_topic, body, key=task_id or None)
                return True
            except BusError as err:
                if delay is None:
                    self._send_failures += 1
                    logger.error("cannot send done task %s to %r: %s; the bus will redeliver it",
                                 task_id or "(no id)", self._done_topic, err)
                    return False
                await asyncio.sleep(delay)
        return False  # pragma: no cover - the loop always returns

    async def _give_back(self, message: Message, delay: float = 1.0) -> None:
        """Do not acknowledge: let the bus deliver the message again after ``delay`` seconds."""
        try:
            await message.nack(delay)
        except BusError as err:
            logger.error("cannot return a message to the bus: %s", err)
        except Exception as err:  # noqa: BLE001 - a bus client's bug must not end the runner
            self._unexpected(err, "returning a message to the bus")

    async def _ack(self, message: Message) -> None:
        try:
            await message.ack()
        except Exception as err:  # noqa: BLE001 - counted and logged; the launcher goes on
            self._ack_failed(err)

    def _ack_failed(self, err: Exception) -> None:
        self._ack_failures += 1
        if isinstance(err, BusError):
            logger.error("ack failed (the bus may deliver the message again): %s", err)
        else:  # a bus client's bug must not end the runner
            self._unexpected(err, "acknowledging a message")

    async def _invalid_message(self, message: Message, reason: str) -> None:
        self._invalid += 1
        logger.warning("invalid message on %r (attempt %d): %s", self.options.topic, message.attempt, reason)
        await self._dead_letter(message, reason)

    async def _dead_letter(self, message: Message, reason: str) -> None:
        """Send ``message`` to the dead-letter topic (when there is one) and acknowledge it."""
        if not self.options.dead_letter_topic:
            logger.error("dropping a message from %r (no dead_letter_topic set): %s; first bytes: %r",
                         self.options.topic, reason, message.body[:200])
        else:
            envelope = dead_letter_envelope(message.body, reason, self.options.topic, message.attempt)
            try:
                await self.producer.send(self.options.dead_letter_topic, envelope)
                self._dead_lettered += 1
            except Exception as err:  # noqa: BLE001 - BusError or worse: keep the message
                logger.error("cannot dead-letter a message: %s; returning it to the bus", err)
                await self._give_back(message)
                return
        await self._ack(message)

    async def _heartbeat(self) -> None:
        """Keep long tasks alive: ``in_progress()`` on the bus and ``touch`` in the ledger."""
        interval = self.options.heartbeat_interval
        while True:
            await asyncio.sleep(min(1.0, interval / 2))
            now = time.monotonic()
            for slot in list(self._in_flight):
                if now - slot._last_beat < interval:
                    continue
                slot._last_beat = now
                try:
                    await slot._message.in_progress()
                    if self._recorder is not None:
                        self._recorder.touch(self._task_type or slot.task.type, slot.task.id)
                except BusError as err:
                    logger.warning("cannot extend the lease of %s: %s", slot.task.id, err)
                except Exception as err:  # noqa: BLE001 - heartbeats must go on for the others
                    self._unexpected(err, f"extending the lease of {slot.task.id}")

    # --------------------------------------------------------------------- stats

    def stats(self) -> dict[str, object]:
        """Runtime, counts and bus info: what ``/stats`` serves."""
        finished = self._finished
        info: dict[str, object] = {
            "runtime_s": round(time.time() - self._began, 3),
            "task_type": self.options.task_type,
            "max_in_progress": self.options.max_in_progress,
            "tasks_consumed": self._consumed,
            "tasks_running": sum(1 for slot in self._in_flight if slot._working),
            "tasks_finished": finished,
            "tasks_invalid": self._invalid,
            "tasks_ignored": self._ignored,
            "tasks_rejected": self._rejected,
            "tasks_wrong_type": self._wrong_type,
            "handler_errors": self._handler_errors,
            "tasks_redelivered": self._redelivered,
            "dead_lettered": self._dead_lettered,
            "send_failures": self._send_failures,
            "ack_failures": self._ack_failures,
            "results": self.durations.by_result(),
            "mean_task_s": round(self.durations.total_seconds() / finished, 6) if finished else 0.0,
            "consumer": self.consumer.info(),
            **({"broadcast": self.broadcast.info()} if self.broadcast is not None else {}),
            "producer": self.producer.info(),
        }
        if self._recorder is not None:
            info["ledger"] = {
                "pending_writes": self._recorder.pending,
                "failures": self._recorder.failures,
                "dropped": self._recorder.dropped,
            }
        info[HEALTH_KEY] = launcher_health(self.consumer, self._recorder)  # /healthz, /readyz
        info[IN_FLIGHT_KEY] = in_flight(slot.task for slot in self._in_flight if slot._working)
        if self.backlog is not None:
            info["backlog"] = self.backlog.latest()
        return info


class _TaskTimedOut(Exception):
    """The task ran past ``task_timeout`` (told apart from a worker's own TimeoutError)."""


def _describe(err: BaseException) -> str:
    text = str(err)
    return text if text else type(err).__name__


def _worker_meta(worker: object) -> dict[str, list[str]] | None:
    """The meta a worker set: ``worker_meta()`` of a ``Worker``, or the ``meta`` mapping of
    any other object a factory returned. A single value counts as a one-item list."""
    if isinstance(worker, Worker):
        meta: object = worker.worker_meta()
    else:
        meta = getattr(worker, "meta", None)
    if not meta or not isinstance(meta, dict):
        return None
    return {str(k): [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)] for k, v in meta.items()}


def _check_outcome(outcome: object) -> tuple[str, str]:
    if isinstance(outcome, tuple) and len(outcome) == 2 and isinstance(outcome[0], str):
        return outcome[0], str(outcome[1])
    return Result.ERROR, f"worker returned {outcome!r}; do_task must return (Result, msg), e.g. completed()"


def _has_async_do_task(make_worker: MakeWorker) -> bool | None:
    """True/False when the worker class tells; None for a factory function (known later)."""
    do_task = getattr(make_worker, "do_task", None)
    if do_task is None:
        return None
    return inspect.iscoroutinefunction(do_task)


async def _maybe_await(value: object) -> None:
    if inspect.isawaitable(value):
        await value


