"""``taskbus quickstart``: a taskmaster and a worker on the file bus, then the done tasks.

Everything lives under ``./taskbus-data/``: the tasks (``hello.jsonl``), the done tasks
(``done.jsonl``) and the SQLite ledger (``ledger.db``). Nothing else is needed: no broker,
no database server. The worker resumes from its offset file, so running it again only does
the new tasks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from task.apps.worker import resolve_worker
from task.bus.registry import open_consumer, open_producer
from task.launcher import Launcher, LauncherOptions
from task.ledger.registry import open_ledger
from task.quickstart.taskmaster.make_tasks import NAMES, make_tasks
from task.settings import AppSettings

__all__ = ["QuickstartApp", "QuickstartSettings"]


class QuickstartSettings(AppSettings):
    """``taskbus quickstart``: run the quickstart taskmaster and worker."""

    data_dir: str = Field("./taskbus-data", description="where tasks, done tasks and the ledger go")
    max_in_progress: int = Field(4, ge=1, description="tasks the worker runs at once")


class QuickstartApp:
    """Sends ten hello tasks, runs the hello worker until the file is done, shows the results."""

    Settings: ClassVar[type[QuickstartSettings]] = QuickstartSettings

    def __init__(self, settings: QuickstartSettings) -> None:
        self.settings = settings
        self.launcher: Launcher | None = None

    @classmethod
    def from_settings(cls, settings: QuickstartSettings) -> QuickstartApp:
        return cls(settings)

    async def run(self) -> int:
        data = Path(self.settings.data_dir)
        bus = f"file:{data}/"
        ledger_url = f"sqlite:{data}/ledger.db"
        data.mkdir(parents=True, exist_ok=True)

        print(f"1. taskmaster: sending {len(NAMES)} hello tasks to {data}/hello.jsonl")
        sent = await make_tasks(NAMES, bus=bus, ledger_url=ledger_url)

        print(f"2. worker: task.quickstart.worker.hello:Hello runs them, {self.settings.max_in_progress} at a time")
        self.launcher = Launcher(
            resolve_worker("task.quickstart.worker.hello:Hello"),
            open_consumer(bus, topic="hello", prefetch=self.settings.max_in_progress),
            open_producer(bus),
            LauncherOptions(max_in_progress=self.settings.max_in_progress, task_type="hello", topic="hello"),
            ledger=open_ledger(ledger_url),
        )
        await self.launcher.run()

        ids = {task.id for task in sent}
        print(f"3. done tasks in {data}/done.jsonl:")
        for line in (data / "done.jsonl").read_text("utf-8").splitlines():
            done = json.loads(line)
            if done.get("id") in ids:
                print(f"   {done['result']:<8} {done.get('msg', '')}")
        ledger = open_ledger(ledger_url)
        outstanding = [r async for r in ledger.outstanding("hello", older_than=0)]
        await ledger.close()
        print(f"4. ledger {data}/ledger.db: {len(outstanding)} hello task(s) outstanding")
        print(
            "\nNext: send your own task and run the worker yourself (`. .venv/bin/activate` first,\n"
            "or type .venv/bin/taskbus):\n"
            '   taskbus send hello "Your Name"\n'
            "   taskbus worker task.quickstart.worker.hello:Hello --ledger sqlite:./taskbus-data/ledger.db\n"
            "   cat taskbus-data/done.jsonl"
        )
        return 0

    async def stop(self) -> None:
        if self.launcher is not None:
            await self.launcher.stop()
