"""Test a worker without a bus: give it tasks, get its done tasks back.

```python
from task.testing import run_worker

done = run_worker(FetchFile, ["s3://b/k1", "s3://b/k2"])
assert [d.result for d in done] == ["complete", "complete"]
```

The real ``Launcher`` runs the worker on a private in-process memory bus, so what a test
sees (type checks, timeouts, meta merging, a worker that raises ending as ``error``) is what
``taskbus worker`` does; only the bus is left out. Like FastStream's test broker and
Dramatiq's stub broker, but for one worker class at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace

from task.bus.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from task.launcher import Launcher, LauncherOptions
from task.ledger.base import Ledger
from task.task import Task
from task.worker import MakeWorker

__all__ = ["run_worker", "run_worker_async"]

#: the task type used when neither the call nor the worker class names one
DEFAULT_TYPE = "test"


def _type_of(make_worker: MakeWorker, task_type: str, options: LauncherOptions) -> str:
    return task_type or options.task_type or str(getattr(make_worker, "task_type", "") or "") or DEFAULT_TYPE


async def run_worker_async(
    make_worker: MakeWorker,
    tasks: Iterable[Task | str],
    *,
    max_in_progress: int | None = None,
    task_type: str = "",
    options: LauncherOptions | None = None,
    ledger: Ledger | None = None,
) -> list[Task]:
    """Run ``make_worker`` (a ``Worker`` class) on ``tasks`` and return their done tasks, in
    the order the tasks were given.

    A string in ``tasks`` is the info of a new task of the worker's type (``task_type``,
    else ``options.task_type``, else the class's ``task_type``, else ``"test"``).
    ``max_in_progress`` runs that many at once (default: ``options``', else 1); ``options``
    sets anything else the Launcher takes (``task_timeout``, ``reject_bad_type``...);
    ``ledger`` records the tasks as a worker's would. Returns once every task is done.

    Raises:
        ValueError: ``max_in_progress`` below 1.
    """
    base = options or LauncherOptions()
    kind = _type_of(make_worker, task_type, base)
    running = base.max_in_progress if max_in_progress is None else max_in_progress
    if running < 1:
        raise ValueError(f"max_in_progress={running}: run at least one task at a time")
    given = [t if isinstance(t, Task) else Task.new(kind, t) for t in tasks]
    broker = MemoryBroker()
    for task in given:
        broker.publish(kind, task.to_json())
    broker.close_topic(kind)  # the launcher returns once every task is done
    opts = replace(base, max_in_progress=running, task_type=kind, topic=kind, channel=kind)
    consumer = MemoryConsumer(broker, kind, prefetch=running)
    await Launcher(make_worker, consumer, MemoryProducer(broker), opts, ledger).run()
    done = [Task.from_json(body) for body in broker.bodies(opts.done_topic)]
    order = {task.id: i for i, task in reversed(list(enumerate(given)))}
    return sorted(done, key=lambda d: order.get(d.id, len(given)))


def run_worker(
    make_worker: MakeWorker,
    tasks: Iterable[Task | str],
    *,
    max_in_progress: int | None = None,
    task_type: str = "",
    options: LauncherOptions | None = None,
    ledger: Ledger | None = None,
) -> list[Task]:
    """``run_worker_async`` for code without a running event loop (a plain pytest test).

    Raises:
        RuntimeError: called while an event loop runs in this thread; ``await
            run_worker_async(...)`` there instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_worker() cannot run inside an event loop: await run_worker_async(...) there")
    return asyncio.run(run_worker_async(
        make_worker, tasks, max_in_progress=max_in_progress, task_type=task_type,
        options=options, ledger=ledger,
    ))
