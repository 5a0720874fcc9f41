"""The flow console's pages over real HTTP (the app's status port, no browser): each page
shows what the store holds, filters and pages, links every task id to its chain, escapes
what comes from the bus, and the backload form previews then sends once, refusing a
cross-site post."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from task.apps.flow import FlowApp
from task.bus.memory import MemoryBroker
from task.flow.console.graph import layout
from task.flow.loader import WorkflowSet
from task.flow.store import AlertKind, AlertRecord, FileRecord
from task.ledger.memory import MemoryLedger
from task.task import Task
from tests.flow.flow_harness import TestClock, bodies, deliver, finish, memory_app, write_workflows
from tests.servers.ports import free_port

FIVE = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>'


class Console:
    """The app, its broker and clock, and an HTTP client on its status port."""

    def __init__(self, app: FlowApp, broker: MemoryBroker, clock: TestClock,
                 http: aiohttp.ClientSession) -> None:
        self.app, self.broker, self.clock, self.http = app, broker, clock, http
        assert app.api is not None
        self.base = f"http://127.0.0.1:{app.api.port}"

    async def get(self, path: str, status: int = 200) -> str:
        async with self.http.get(self.base + path) as response:
            text = await response.text()
            assert response.status == status, text
            return text

    async def post(self, path: str, form: dict[str, str], status: int = 200,
                   headers: dict[str, str] | None = None) -> str:
        async with self.http.post(self.base + path, data=form, headers=headers or {}) as response:
            text = await response.text()
            assert response.status == status, text
            return text


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    broker, clock = MemoryBroker(), TestClock()
    app = memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger(),
                     status_port=free_port())
    async with app, aiohttp.ClientSession() as http:
        yield Console(app, broker, clock, http)


async def a_day(c: Console) -> Task:
    """Given 05:00: the load ran and completed (its children started), a worker raised an
    alert with markup in its message, a file landed. Returns the load."""
    c.clock.set(FIVE)
    await c.app.tick()
    [load] = bodies(c.broker, "load")
    await deliver(c.app, c.broker, finish(load, "complete", FIVE, rows="3"))
    [audit] = bodies(c.broker, "audit")
    await deliver(c.app, c.broker, finish(audit, "alert", FIVE, msg=HOSTILE))
    c.broker.publish("files", b'{"path": "s3://landing/2024/01/31/a.csv", "size": 10}')
    message = await c.app.files_consumer.msg()  # type: ignore[union-attr]
    assert message is not None
    await c.app.handle_file(message)
    return load


def ids_in(page: str, table: str) -> list[str]:
    """The chain links' ids in the table with id ``table``."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'href="/console/task\?id=([^"]+)"', body)


async def test_home_goes_to_todays_tasks_with_the_recap_and_every_id_linked(console: Console) -> None:
    load = await a_day(console)
    async with console.http.get(console.base + "/", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (302, "/console/tasks")
    page = await console.get("/console/tasks")
    assert "<title>tasks of 2024-01-31 · taskbus flow</title>" in page
    assert 'href="/style.css"' in page
    recap = page.split('id="recap"', 1)[1].split("</table>", 1)[0]
    assert "load:hourly" in recap and "report" in recap and "audit" in recap and "landing" in recap
    assert sorted(set(ids_in(page, "tasks"))) == sorted({load.id, bodies(console.broker, "landing")[0].id})
    assert "page 1 of 1 · 4 tasks" in page
    assert (await console.get("/style.css")).startswith("/* taskbus")


async def test_filters_narrow_the_tasks_and_bad_ones_say_what_to_write(console: Console) -> None:
    await a_day(console)
    page = await console.get("/console/tasks?day=2024-01-31&type=audit&result=alert")
    assert "page 1 of 1 · 1 task" in page
    assert '<option value="audit" selected>' in page
    running = await console.get("/console/tasks?day=2024-01-31&running=yes")
    assert "2 tasks" in running  # report and landing wait for their workers
    assert "No task matches" in await console.get("/console/tasks?day=2024-01-31&type=nope")
    bad = await console.get("/console/tasks?result=maybe", 400)
    assert "result=&#x27;maybe&#x27;: write one of complete, error, alert, warn or none" in bad
    assert "write it like 2024-01-31" in await console.get("/console/tasks?day=31/01", 400)
    assert "page number" in await console.get("/console/tasks?page=0", 400)


async def test_tasks_are_paged_newest_first(console: Console) -> None:
    # Given 250 tasks recorded on the day
    tasks = [Task.new("load", f"i{i}", id=f"t{i:03d}") for i in range(250)]
    for i, task in enumerate(tasks):
        console.clock.set(datetime.fromtimestamp(FIVE.timestamp() + i, UTC))
        await console.app.engine.send_new([task])
    first = await console.get("/console/tasks?day=2024-01-31")
    assert "page 1 of 3 · 250 tasks" in first and 'id="page-next"' in first
    assert ids_in(first, "tasks")[:2] == ["t249", "t248"]
    last = await console.get("/console/tasks?day=2024-01-31&page=3")
    assert ids_in(last, "tasks")[-1] == "t000" and len(ids_in(last, "tasks")) == 50
    assert 'id="page-prev"' in last and 'id="page-next"' not in last


async def test_the_chain_shows_the_task_its_children_and_their_events(console: Console) -> None:
    load = await a_day(console)
    page = await console.get(f"/console/task?id={load.id}")
    headings = re.findall(r'<section class="panel chain-task" id="task-\d+"><h3><code>([^<]+)', page)
    assert headings == ["load:hourly", "report", "audit"]
    assert "started as a child of <code>load:hourly</code>" in page
    assert "&lt;script&gt;" in page and HOSTILE not in page
    missing = await console.get("/console/task?id=nope")
    assert "No task &#x27;nope&#x27; in the store" in missing
    assert "give the task" in await console.get("/console/task", 400)


async def test_alerts_and_files_pages_of_the_day(console: Console) -> None:
    load = await a_day(console)
    alerts = await console.get("/console/alerts?day=2024-01-31")
    assert ids_in(alerts, "alerts") == [load.id]
    summary = alerts.split('id="alert-summary"', 1)[1].split("</table>", 1)[0]
    assert "audit" in summary and "1 alert" in summary and "05:00:00 UTC" in summary
    assert HOSTILE not in alerts and "&lt;script&gt;alert(&quot;x&quot;)" in alerts
    files = await console.get("/console/files?day=2024-01-31")
    assert "s3://landing/2024/01/31/a.csv" in files and "landing" in files
    assert ids_in(files, "files") == [bodies(console.broker, "landing")[0].id]
    assert "No alerts on this day." in await console.get("/console/alerts?day=2024-01-30")


async def test_workflows_are_drawn_as_svg_graphs_with_counts(console: Console) -> None:
    await a_day(console)
    page = await console.get("/console/workflows")
    assert page.count("<svg") == 1 and page.count('class="phase-node"') == 4
    assert page.count('class="edge"') == 2  # load -> report, load -> audit
    assert "1 complete" in page and "1 alert" in page
    assert 'data-phase="load:hourly"' in page
    assert "/console/tasks?day=2024-01-31&amp;type=report" in page


def test_the_graph_puts_children_right_of_their_parents(tmp_path: Path) -> None:
    text = """
[[phase]]
task = "a"
rule = "cron=0 * * * *"
[[phase]]
task = "b"
dependsOn = "a"
[[phase]]
task = "c"
dependsOn = "b"
[[phase]]
task = "d"
dependsOn = "a"
[[phase]]
task = "e"
"""
    workflows = WorkflowSet(write_workflows(tmp_path, text, "w.toml"))
    workflows.reload()
    nodes, edges = layout(workflows.workflows()["w.toml"])
    assert {n.phase.topic: (n.column, n.row) for n in nodes} == {
        "a": (0, 0), "b": (1, 0), "c": (2, 0), "d": (1, 1), "e": (0, 1)}
    assert sorted((p.phase.topic, c.phase.topic) for p, c in edges) == [("a", "b"), ("a", "d"), ("b", "c")]


async def test_about_shows_version_uptime_store_and_retention(console: Console) -> None:
    await a_day(console)
    page = await console.get("/console/about")
    about = page.split('id="about"', 1)[1].split("</table>", 1)[0]
    assert "taskbus 0." in about and "memory" in about and "30d" in about
    assert "oldest day kept" in about and "2024-01-31" in about


def form_of(page: str, form_id: str) -> dict[str, str]:
    """The hidden inputs of the form ``form_id``."""
    body = page.split(f'id="{form_id}"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))


async def test_backload_previews_then_sends_those_tasks_once(console: Console) -> None:
    form = await console.get("/console/backload")
    token = form_of(form, "backload-form")["csrf"]
    ask = {"csrf": token, "phase": "etl.toml|load:hourly", "from": "2024-01-01", "to": "2024-01-03",
           "by": "day", "every": "", "meta": "", "action": "preview"}
    # a preview sends nothing
    preview = await console.post("/console/backload", ask)
    assert "DRY RUN ONLY: phase found in etl.toml" in preview
    assert "s3://bucket/2024/01/02/00.gz" in preview and bodies(console.broker, "load") == []
    planned = re.findall(r"<tr><td>([0-9a-f-]{36})</td>", preview)
    assert len(planned) == 3
    # execute sends exactly the previewed tasks, each linked to its chain
    execute = {**form_of(preview, "execute-form"), "action": "execute"}
    done = await console.post("/console/backload", execute)
    assert "Executed: sent 3 tasks." in done
    assert [t.id for t in bodies(console.broker, "load")] == planned
    assert ids_in(done, "backload-sent") == planned
    # sending the same form again (a reload, a double click) sends nothing more
    again = await console.post("/console/backload", execute, 409)
    assert "executed already" in again and len(bodies(console.broker, "load")) == 3


async def test_a_bad_backload_shows_the_form_again_with_one_line(console: Console) -> None:
    token = form_of(await console.get("/console/backload"), "backload-form")["csrf"]
    page = await console.post("/console/backload", {
        "csrf": token, "phase": "etl.toml|report", "from": "2024-01-01", "action": "preview"}, 400)
    assert "meta key &#x27;rows&#x27; is missing" in page and 'id="backload-form"' in page
    meta = await console.post("/console/backload", {
        "csrf": token, "phase": "etl.toml|report", "from": "2024-01-01", "meta": "rows=1,2",
        "action": "preview"})
    assert "?day=2024-01-01&amp;rows=1" in meta and "?day=2024-01-01&amp;rows=2" in meta


async def test_backload_refuses_cross_site_posts_and_missing_tokens(console: Console) -> None:
    ask = {"phase": "etl.toml|load:hourly", "from": "2024-01-01", "action": "preview"}
    page = await console.post("/console/backload", ask, 403)
    assert "token" in page
    token = form_of(await console.get("/console/backload"), "backload-form")["csrf"]
    evil = await console.post("/console/backload", {**ask, "csrf": token}, 403,
                              headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert "cross-site" in evil
    # the console's own page behind a TLS proxy: the browser says https, flow sees http
    host = console.base.removeprefix("http://")
    proxied = await console.post("/console/backload", {**ask, "csrf": token}, 200,
                                 headers={"Origin": f"https://{host}", "Sec-Fetch-Site": "same-origin"})
    assert "DRY RUN ONLY" in proxied
    other = await console.post("/console/backload", {**ask, "csrf": token}, 403,
                               headers={"Origin": "https://evil.example"})
    assert "cross-site" in other
    async with console.http.get(console.base + "/console/backload") as response:
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none'


async def test_alerts_and_files_are_paged_newest_first(console: Console) -> None:
    # Given 250 alerts and 250 files in one day
    store = console.app.store
    start = FIVE.timestamp()
    for i in range(250):
        await store.record_alert(AlertRecord(start + i, f"a{i:03d}", "load", "", AlertKind.ERROR, "boom"))
        await store.record_file(FileRecord(start + i, f"s3://x/{i:03d}.csv", 1, (), (f"f{i:03d}",)))
    first = await console.get("/console/alerts?day=2024-01-31")
    assert "page 1 of 2 · 250 alerts" in first and ids_in(first, "alerts")[0] == "a249"
    # the summary counts the whole day
    assert ">250<" in first.split('id="alert-summary"', 1)[1]
    second = await console.get("/console/alerts?day=2024-01-31&page=2")
    assert ids_in(second, "alerts")[-1] == "a000" and len(ids_in(second, "alerts")) == 50
    files = await console.get("/console/files?day=2024-01-31&page=2")
    assert "page 2 of 2 · 250 files" in files and ids_in(files, "files")[-1] == "f000"
    assert "no phase matched" in files
