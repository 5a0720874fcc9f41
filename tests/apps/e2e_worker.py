"""A worker process for the recover end-to-end test: ``python e2e_worker.py BUS TYPE LEDGER CAP``.

Runs a Launcher wired by ``from_settings`` exactly as ``taskbus worker`` wires it, with a
short heartbeat so the test need not wait out the default 5 s. Each task sleeps the seconds
in its info, at most CAP. Prints ``ready`` once subscribed: core NATS drops what is sent
before that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys

from task.launcher import Launcher
from task.result import Outcome, completed
from task.settings import WorkerSettings, load_settings
from task.worker import TaskContext, Worker


class Sleeper(Worker):
    cap = 0.0

    async def do_task(self, ctx: TaskContext) -> Outcome:
        await asyncio.sleep(min(float(ctx.task.info or 0), self.cap))
        return completed("slept")


async def main(bus: str, task_type: str, ledger: str, cap: str) -> None:
    Sleeper.cap = float(cap)
    settings = load_settings(WorkerSettings, bus=bus, type=task_type, ledger=ledger, worker="e2e")
    launcher = Launcher.from_settings(Sleeper, settings)
    launcher.options = dataclasses.replace(launcher.options, heartbeat_interval=0.2)
    await launcher.consumer.start()
    print("ready", flush=True)
    await launcher.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
