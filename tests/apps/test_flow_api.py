"""The JSON API of ``taskbus flow`` over real HTTP: /info, /task/{id}, /recap, /backload,
/refresh beside /healthz and /stats; bad input answered 400 with one line; a bad workflow
file keeps the good version, and /info says why."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from task.apps.flow import FlowApp
from task.bus.memory import MemoryBroker
from task.ledger.memory import MemoryLedger
from tests.flow.flow_harness import TestClock, bodies, deliver, finish, memory_app, write_workflows
from tests.servers.ports import free_port

FIVE = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


class Api:
    """The app with its broker, clock and an HTTP client on its status port."""

    def __init__(self, app: FlowApp, broker: MemoryBroker, clock: TestClock,
                 http: aiohttp.ClientSession, workflows: Path) -> None:
        self.app, self.broker, self.clock, self.http, self.workflows = app, broker, clock, http, workflows
        assert app.api is not None
        self.base = f"http://127.0.0.1:{app.api.port}"

    async def get(self, path: str, status: int = 200) -> Any:
        async with self.http.get(self.base + path) as response:
            assert response.status == status, await response.text()
            return await response.json() if response.content_type == "application/json" else await response.text()

    async def post(self, path: str, body: object, status: int = 200) -> Any:
        async with self.http.post(self.base + path, json=body) as response:
            assert response.status == status, await response.text()
            return await response.json()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    broker, clock = MemoryBroker(), TestClock()
    workflows = write_workflows(tmp_path / "wf")
    app = memory_app(broker, workflows, clock, ledger=MemoryLedger(), status_port=free_port())
    async with app, aiohttp.ClientSession() as http:
        yield Api(app, broker, clock, http, workflows)


async def test_info_lists_workflows_phases_and_cron_times(api: Api) -> None:
    info = await api.get("/info")
    [phases] = [w["phases"] for w in info["workflows"].values()]
    assert list(info["workflows"]) == ["etl.toml"]
    load = phases[0]
    assert (load["task"], load["starts"], load["children"]) == ("load:hourly", "cron", ["report", "audit"])
    assert load["next"] == "2024-01-31T05:00:00+00:00"
    assert load["prev"] == "2024-01-31T04:00:00+00:00"
    assert [p["starts"] for p in phases] == ["cron", "dependsOn", "dependsOn", "files"]
    assert info["problems"] == []
    assert await api.get("/healthz") == "ok\n"
    assert (await api.get("/stats"))["app"] == "flow"
    async with api.http.get(api.base + "/metrics") as response:
        text = await response.text()
        assert response.status == 200 and "taskbus_flow_" in text or "pip install" in text


async def test_task_returns_the_whole_chain_and_recap_counts_it(api: Api) -> None:
    # Given a load that completed and started its children
    api.clock.set(FIVE)
    await api.app.tick()
    [load] = bodies(api.broker, "load")
    await deliver(api.app, api.broker, finish(load, "complete", FIVE, rows="3"))
    # Then /task/{id} has every event of the id, /recap counts per type:job
    chain = await api.get(f"/task/{load.id}")
    assert [(e["type"], e["event"]) for e in chain["events"]] == [
        ("load", "created"), ("load", "done"), ("report", "child"), ("audit", "child")]
    recap = await api.get("/recap?day=2024-01-31")
    rows = {(r["type"], r["job"]): r for r in recap["recap"]}
    assert rows[("load", "hourly")]["complete"] == 1
    assert rows[("report", "")]["running"] == 1
    assert (await api.get("/task/nope", 404))["error"] == "no task 'nope' in the store"
    assert "day=" in (await api.get("/recap?day=yesterday", 400))["error"]


async def test_backload_is_a_dry_run_unless_executed(api: Api) -> None:
    body = {"task": "load:hourly", "from": "2024-01-01", "to": "2024-01-03"}
    dry = await api.post("/backload", body)
    assert dry["status"].startswith("DRY RUN ONLY: phase found in etl.toml")
    assert [t["info"] for t in dry["tasks"]] == [
        "s3://bucket/2024/01/01/00.gz", "s3://bucket/2024/01/02/00.gz", "s3://bucket/2024/01/03/00.gz"]
    assert dry["tasks"][0]["meta"] == "cron=2024-01-01T00&job=hourly&workflow=etl.toml"
    assert bodies(api.broker, "load") == []
    hourly = await api.post("/backload", {"task": "report", "at": "2024-01-05T07", "by": "hour",
                                          "meta": {"rows": ["1", "2"]}})
    assert [t["info"] for t in hourly["tasks"]] == ["?day=2024-01-05&rows=1", "?day=2024-01-05&rows=2"]
    done = await api.post("/backload", {**body, "execute": True})
    assert done["status"].startswith("Executed:") and done["count"] == 3
    assert len(bodies(api.broker, "load")) == 3


@pytest.mark.parametrize(("body", "error"), [
    ({"task": "nope", "from": "2024-01-01"}, "no phase nope in the workflows; GET /info lists them"),
    ({"task": "load:hourly", "from": "2024-13-01"}, "from: time '2024-13-01' is not a real date"),
    ({"task": "load:hourly", "from": "2024-01-03", "to": "2024-01-01"}, "to (2024-01-01) is before from"),
    ({"task": "load:hourly", "frm": "2024-01-01"}, "frm: Extra inputs are not permitted"),
    ({"task": "report", "at": "2024-01-01"}, "meta key 'rows' is missing"),
    ({"task": "load:hourly", "from": "2020-01-01", "to": "2024-01-01", "by": "hour"}, "more than 10000"),
    ([1], "a backload is a JSON object, got list"),
])
async def test_bad_backloads_get_400_with_one_line(api: Api, body: object, error: str) -> None:
    answer = await api.post("/backload", body, 400)
    assert error in answer["error"]
    assert "\n" not in answer["error"]


async def test_a_bad_workflow_file_keeps_the_good_one_and_info_shows_why(api: Api) -> None:
    # Given a loaded workflow, when its file is broken and refreshed
    (api.workflows / "etl.toml").write_text("[[phase]]\ntask = 'load'\nrule = 'cron=nope'\n", "utf-8")
    refreshed = await api.post("/refresh", {})
    # Then the good version stays in use and /info shows the problem
    assert refreshed["changed"] == [] and refreshed["workflows"] == ["etl.toml"]
    info = await api.get("/info")
    assert len(info["workflows"]["etl.toml"]["phases"]) == 4
    assert any(line.startswith("etl.toml") and "cron" in line for line in info["problems"])
    assert any("stays in use" in line for line in info["problems"])
    # When a second, good file is added, the app picks it up on its own
    write_workflows(api.workflows, '[[phase]]\ntask = "nightly"\nrule = "cron=0 0 * * *"\n', "more.toml")
    api.clock.advance(5)  # reload_every
    await api.app.tick()
    assert sorted((await api.get("/info"))["workflows"]) == ["etl.toml", "more.toml"]


async def test_unknown_paths_name_the_valid_ones(api: Api) -> None:
    answer = await api.get("/nope", 404)
    assert "GET /info" in answer["error"]
