"""``taskbus worker MODULE:ATTR``: run a worker class on a bus, in one or several processes.

``--processes N`` starts N launcher processes that share the channel (queue group, consumer
group) so one command uses every core; a SIGTERM to the parent is passed to each child.
With a ledger the worker also releases the delayed tasks of its type when they come due
(``task.delay_release``), and every worker sends a recurrent task (``every=`` in its meta)
again when it completes (``task.recurrent``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any, ClassVar

from task.apps.lifecycle import Lifecycle
from task.delay_release import DelayReleaser
from task.errors import ConfigError, TaskError
from task.launcher import Launcher
from task.logs import configure_logging
from task.metrics import launcher_metrics
from task.recurrent import Recurrence
from task.settings import WorkerSettings
from task.url import parse_url
from task.worker import MakeWorker, Worker

__all__ = ["WorkerApp", "resolve_worker"]

logger = logging.getLogger(__name__)

#: Names that need no module: ``taskbus worker nop``.
BUILT_IN = {"nop": "task.apps.nop:NopWorker"}
#: Buses every process reads in full: several processes on one would each run every task.
PROCESS_LOCAL_BUSES = ("file", "memory")


def resolve_worker(spec: str) -> MakeWorker:
    """The MakeWorker named by ``MODULE:ATTR`` (or a built-in name like ``nop``).

    Raises:
        ConfigError: the spec is malformed, the module cannot be imported, or the attribute
            is missing or not callable.
    """
    spec = BUILT_IN.get(spec, spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"worker {spec!r} must be MODULE:ATTR, e.g. myapp.workers:FetchFile (or 'nop')")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`, find modules of the current directory
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"cannot import {module_name!r} for worker {spec!r}: {err}; is it on PYTHONPATH?") from err
    except Exception as err:
        raise ConfigError(f"importing {module_name!r} failed: {type(err).__name__}: {err}") from err
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (worker {spec!r})")
    check_worker(target, spec)
    return target  # type: ignore[no-any-return]


def check_worker(target: object, spec: str) -> None:
    """At start-up, not per task: ``target`` must be a class with a ``do_task`` of its own,
    or a callable (a factory) that returns such an object.

    Raises:
        ConfigError: ``target`` is neither, or its class never defines ``do_task``.
    """
    if isinstance(target, type):
        do_task = getattr(target, "do_task", None)
        if do_task is None or not callable(do_task):
            raise ConfigError(f"worker class {spec!r} has no do_task method; define "
                              "`async def do_task(self, ctx)` returning completed(...) or failed(...)")
        if do_task is Worker.do_task:
            raise ConfigError(f"worker class {spec!r} does not implement do_task; define "
                              "`async def do_task(self, ctx)` returning completed(...) or failed(...)")
    elif not callable(target):
        raise ConfigError(f"worker {spec!r} is a {type(target).__name__}, not a class or callable; "
                          "name a Worker subclass (or a function that returns a worker)")


class WorkerApp:
    """Runs one Launcher, or ``processes`` child processes of one Launcher each."""

    Settings: ClassVar[type[WorkerSettings]] = WorkerSettings

    def __init__(self, settings: WorkerSettings) -> None:
        if not settings.worker:
            raise ConfigError("name the worker: taskbus worker MODULE:ATTR (or 'taskbus worker nop')")
        self.settings = settings
        self.make_worker = resolve_worker(settings.worker)
        if not (settings.type or getattr(self.make_worker, "task_type", "")) and not settings.topic:
            raise ConfigError(f"worker {settings.worker!r} has no task_type: pass --type or --topic")
        if settings.processes > 1:
            scheme = parse_url(settings.bus).scheme if ":" in settings.bus else ""
            if scheme in PROCESS_LOCAL_BUSES:
                raise ConfigError(
                    f"--processes {settings.processes} cannot share a {scheme}: bus (every process "
                    "would run every task); use --max-in-progress for more tasks at once, or a broker bus"
                )
        self.launcher: Launcher | None = None
        self._children: list[multiprocessing.process.BaseProcess] = []
        self._stopping = False

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> WorkerApp:
        return cls(settings)

    async def run(self) -> int:
        if self.settings.processes > 1:
            return await self._run_processes()
        self.launcher = Launcher.from_settings(self.make_worker, self.settings)
        if self._stopping:  # stop() came during start-up, before there was a launcher
            await self.launcher.stop()
        options = self.launcher.options
        self.launcher.after_done = Recurrence(  # back to the topic it came from (priorities)
            self.launcher.producer, self.launcher.ledger, topic=options.topic,
            topic_of=getattr(self.launcher.consumer, "topic_of", None),
        )
        lifecycle = Lifecycle(
            "worker", self.launcher.stats, logger=logger, status_host=self.settings.status_host,
            status_port=self.settings.status_port, metrics=launcher_metrics(self.launcher),
            parts=[self._releaser(options.task_type)],
            ledger_unhealthy_after=self.settings.ledger_unhealthy_after,
        )
        await lifecycle.open({
            "worker": self.settings.worker, "type": options.task_type, "bus": self.settings.bus,
            "out_bus": self.settings.out_bus, "topic": options.topic, "channel": options.channel,
            "done_topic": options.done_topic, "max_in_progress": options.max_in_progress,
            "ledger": self.settings.ledger, "status_port": self.settings.status_port or "off",
        })
        try:
            await self.launcher.run()
        finally:
            await lifecycle.close()
        stats = self.launcher.stats()
        logger.info("stopped: %s tasks finished, %s invalid", stats["tasks_finished"], stats["tasks_invalid"])
        return 0

    def _releaser(self, task_type: str) -> DelayReleaser | None:
        """With a ledger, the worker releases the delayed tasks of its type that come due (its
        own ledger connection and producer: the Launcher closes its own before this stops)."""
        if not self.settings.ledger:
            return None
        return DelayReleaser.from_urls(self.settings.ledger, self.settings.producer_url,
                                       credentials=self.settings.credentials(),
                                       task_lists=[task_type] if task_type else [])

    async def _run_processes(self) -> int:
        context = multiprocessing.get_context("spawn")
        settings = self.settings.model_copy(update={"processes": 1})
        # every mistake the children would find (a bad URL, a missing extra) is found here,
        # once, as one line: the Launcher's constructors do no I/O
        Launcher.from_settings(self.make_worker, settings)
        logger.info("worker starting %d processes", self.settings.processes)
        for i in range(self.settings.processes):
            if self._stopping:
                break
            # broadcast left unset stays unset: on by default where the bus can carry it
            values = settings.model_dump(mode="python", exclude=None if "broadcast" in settings.model_fields_set
                                         else {"broadcast"})
            child = context.Process(target=_child_main, args=(values, i), daemon=False)
            child.start()
            self._children.append(child)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, child.join) for child in self._children))
        return max((self._status_of(child) for child in self._children), default=0)

    def _status_of(self, child: multiprocessing.process.BaseProcess) -> int:
        """A child's exit status; killed by a signal is a failure unless we sent the stop."""
        code = child.exitcode or 0
        if code >= 0:
            return code
        if self._stopping and -code in (signal.SIGTERM, signal.SIGINT):
            return 0  # stopped while it was still starting up
        logger.error("worker process %d was killed by signal %d", child.pid or 0, -code)
        return 1

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for child in self._children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)
        if self.launcher is not None:
            await self.launcher.stop()


def _child_main(values: dict[str, Any], index: int) -> None:
    """One launcher process of ``--processes``: errors end it as they end a single process,
    with one line on stderr and exit 2 (a mistake) or 1 (a failure), never a traceback."""
    stop_requested = False

    def early_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, early_stop)
    settings = WorkerSettings.model_validate(values)
    configure_logging(settings.log_level, settings.log_format)
    if settings.status_port:
        settings = settings.model_copy(update={"status_port": settings.status_port + index})

    async def main() -> None:
        app = WorkerApp(settings)
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []  # kept, so a stop is not collected mid-way
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stopping.append(loop.create_task(app.stop())))
        if stop_requested:
            await app.stop()
        await app.run()
        await asyncio.gather(*stopping)

    try:
        asyncio.run(main())
    except ConfigError as err:
        print(f"taskbus: {err}", file=sys.stderr)
        sys.exit(2)
    except TaskError as err:
        print(f"taskbus: {err}", file=sys.stderr)
        sys.exit(1)
