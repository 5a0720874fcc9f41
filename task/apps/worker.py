"""``taskbus worker MODULE:ATTR``: run a worker class on a bus, in one or several processes.

``--processes N`` starts N launcher processes that share the channel (queue group, consumer
group) so one command uses every core; a SIGTERM to the parent is passed to each child.
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

from task.errors import ConfigError
from task.launcher import Launcher
from task.logs import configure_logging
from task.metrics import launcher_metrics
from task.settings import WorkerSettings
from task.status import StatusServer
from task.worker import MakeWorker

__all__ = ["WorkerApp", "resolve_worker"]

logger = logging.getLogger(__name__)

#: Names that need no module: ``taskbus worker nop``.
BUILT_IN = {"nop": "task.apps.nop:NopWorker"}


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
    if not callable(target):
        raise ConfigError(f"worker {spec!r} is not a class or callable")
    return target  # type: ignore[no-any-return]


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
        status = None
        if self.settings.status_port:
            status = StatusServer(
                self.launcher.stats, host=self.settings.status_host, port=self.settings.status_port,
                metrics=launcher_metrics(self.launcher),
            )
            await status.start()
        try:
            await self.launcher.run()
        finally:
            if status is not None:
                await status.stop()
        stats = self.launcher.stats()
        logger.info("stopped: %s tasks finished, %s invalid", stats["tasks_finished"], stats["tasks_invalid"])
        return 0

    async def _run_processes(self) -> int:
        context = multiprocessing.get_context("spawn")
        settings = self.settings.model_copy(update={"processes": 1})
        for i in range(self.settings.processes):
            child = context.Process(target=_child_main, args=(settings.model_dump(mode="python"), i), daemon=False)
            child.start()
            self._children.append(child)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, child.join) for child in self._children))
        codes = [child.exitcode or 0 for child in self._children]
        return max((c for c in codes if c > 0), default=0)

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
    """One launcher process of ``--processes``."""
    settings = WorkerSettings.model_validate(values)
    configure_logging(settings.log_level, settings.log_format)
    if settings.status_port:
        settings = settings.model_copy(update={"status_port": settings.status_port + index})
    app = WorkerApp(settings)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(app.stop()))
        await app.run()

    asyncio.run(main())
