"""``ledger_unhealthy_after`` in a worker's settings reaches its ``/healthz``.

``Lifecycle`` and ``StatusServer`` took the threshold, but ``taskbus worker`` never passed it:
every worker judged its ledger against the built-in 60 s whatever its settings said.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from task import Task
from task.apps import worker as worker_app
from task.apps.lifecycle import Lifecycle
from task.bus.memory import MemoryBroker
from task.ledger.memory import LedgerFault, MemoryLedger
from task.settings import WorkerSettings, load_settings
from tests.servers.ports import free_port
from tests.test_health import get, until

#: a time far from now, so nothing here depends on the real clock's value
T0 = 1_000_000.0


def test_the_setting_takes_a_duration_and_defaults_to_a_minute() -> None:
    assert load_settings(WorkerSettings, None, worker="nop").ledger_unhealthy_after == 60
    assert load_settings(WorkerSettings, None, worker="nop", ledger_unhealthy_after="5m").ledger_unhealthy_after == 300


async def test_a_workers_ledger_unhealthy_after_decides_when_healthz_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker whose settings allow its ledger 10 minutes of failed writes, a ledger
    # that fails every write, and a status server on a clock the test sets
    now = [T0]
    lifecycles: list[Lifecycle] = []

    class ClockedLifecycle(Lifecycle):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            assert self.status is not None
            self.status.clock = lambda: now[0]
            lifecycles.append(self)

    monkeypatch.setattr(worker_app, "Lifecycle", ClockedLifecycle)
    ledger = MemoryLedger.named("health-setting")
    ledger.inject(LedgerFault.UNAVAILABLE, 1_000_000)
    MemoryBroker.named("health-setting").publish("quick", Task.new("quick", "a", id="a").to_json())
    settings = load_settings(WorkerSettings, None, worker="nop", type="quick", bus="memory:health-setting",
                             ledger="memory:health-setting", status_port=free_port(), ledger_unhealthy_after="10m")
    app = worker_app.WorkerApp(settings)
    running = asyncio.create_task(app.run())
    try:
        # When its first ledger write fails
        since = await until(lambda: app.launcher and app.launcher.stats()["health"].get("ledger_failing_since"),
                            "a failed ledger write")
        # Then past the built-in minute it is still healthy, and past its own 10 minutes it is not
        now[0] = since + 61
        assert await get(settings.status_port, "/healthz") == (200, "ok\n")
        now[0] = since + 601
        status, body = await get(settings.status_port, "/healthz")
        assert status == 503 and "every write has failed for 601s (limit 600s)" in body, body
        assert len(lifecycles) == 1
    finally:
        ledger._faults.clear()  # the ledger is back: the held writes go through before the stop
        await app.stop()
        assert await asyncio.wait_for(running, 30) == 0
