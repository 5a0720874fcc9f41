"""The flow console in a real browser (chromium through its chromedriver), against a live
``taskbus flow`` on the file bus and on JetStream (issue 15).

The person on call submits a backload dry run and executes it, a worker (the test) sends
the tasks back done, one with an alert; then they open each page, filter the tasks, follow
a task's chain, read the alerts, files, workflows and about pages. A screenshot of each page
goes to ``tests/artifacts/console-<page>-<bus>.png``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from task.bus.registry import open_consumer, open_producer
from task.task import Task
from tests.browser import browser, screenshot, wait_for
from tests.servers.nats import NatsServer
from tests.servers.ports import free_port

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["browser"]  # the fixture, imported so pytest finds it here

#: selenium's ``CSS`` and ``ID``, so collecting this module needs no selenium
CSS, ID = "css selector", "id"
TASKBUS = str(Path(sys.executable).parent / "taskbus")
#: a message with markup, as a worker may send: the pages must show it as text
HOSTILE = '<img src=x onerror="alert(1)"> audit found 2 gaps'

WORKFLOW = """
[[phase]]
task = "{p}load:hourly"
rule = "cron=0 0 1 1 *"
retry = 1
template = "?day={{yyyy}}-{{mm}}-{{dd}}"

[[phase]]
task = "{p}report"
dependsOn = "{p}load:hourly"
rule = "require={{meta:rows}}"
template = "?day={{yyyy}}-{{mm}}-{{dd}}&rows={{meta:rows}}"

[[phase]]
task = "{p}audit"
dependsOn = "{p}load"
template = "?day={{yyyy}}-{{mm}}-{{dd}}"

[[phase]]
task = "{p}landing"
rule = "files=s3://landing/**/*.csv"
template = "{{meta:file}}"
"""


class Flow:
    """A live ``taskbus flow``: its console's base URL and the names of its topics."""

    def __init__(self, bus: str, prefix: str, port: int) -> None:
        self.bus, self.p, self.port = bus, prefix, port
        self.base = f"http://127.0.0.1:{port}"
        self.done, self.files = f"{prefix}done", f"{prefix}files"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@contextmanager
def live_flow(cwd: Path, bus: str, prefix: str) -> Iterator[Flow]:
    """``taskbus flow`` on ``bus`` with a SQLite ledger (and store) in ``cwd``; stopped with
    SIGTERM after, its stderr free of tracebacks."""
    (cwd / "wf").mkdir()
    (cwd / "wf" / "etl.toml").write_text(WORKFLOW.format(p=prefix), "utf-8")
    flow = Flow(bus, prefix, free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    process = subprocess.Popen(
        [TASKBUS, "flow", "--workflow", "wf", "--bus", bus, "--ledger", "sqlite:./ledger.db",
         "--status-port", str(flow.port), "--done-topic", flow.done, "--files-topic", flow.files,
         "--poll-interval", "100ms"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: http_status(flow.base + "/healthz") == 200 or process.poll() is not None,
                 "flow answering /healthz")
        assert process.poll() is None, process.communicate()[1]
        yield flow
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr


async def take(bus: str, topic: str, count: int) -> list[Task]:
    """The first ``count`` tasks on ``topic``, as a worker reads them."""
    reader = bus.replace("?follow=1&poll=50ms", "?follow=1&poll=50ms&offset=0")
    tasks: list[Task] = []
    async with open_consumer(reader, topic=topic, channel="test") as consumer:
        while len(tasks) < count:
            message = await asyncio.wait_for(consumer.msg(), 30)
            assert message is not None
            tasks.append(Task.from_json(message.body))
            await message.ack()
    return tasks


async def work(flow: Flow, sent_ids: list[str]) -> None:
    """The workers: read the two loads the backload sent; the first completes with rows=3
    (its report and audit start), the second fails (flow retries it); the audit ends with an
    alert; a file lands."""
    loads = await take(flow.bus, f"{flow.p}load", 2)
    assert sorted(t.id for t in loads) == sorted(sent_ids)
    async with open_producer(flow.bus.partition("?")[0]) as producer:
        first, second = sorted(loads, key=lambda t: t.info)
        done = first.copy()
        done.set_meta("rows", "3")
        done.start()
        done.end("complete", "loaded 3 rows")
        await producer.send(flow.done, done.to_json())
        failed = second.copy()
        failed.start()
        failed.end("error", "source not ready")
        await producer.send(flow.done, failed.to_json())
        [audit] = await take(flow.bus, f"{flow.p}audit", 1)
        audit.start()
        audit.end("alert", HOSTILE)
        await producer.send(flow.done, audit.to_json())
        await producer.send(flow.files, b'{"path": "s3://landing/2024/01/31/orders.csv", "size": 2048}')


def text_of(driver: WebDriver, selector: str) -> str:
    """The text of the first ``selector`` on the page shown now ("" when none, or when the
    page was replaced while reading it: the browser may still be loading the next one)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        found = driver.find_elements(CSS, selector)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def open_page(driver: WebDriver, flow: Flow, path: str, selector: str, wanted: str) -> str | None:
    """Open ``path``; the text of ``selector`` once it contains ``wanted``."""
    driver.get(flow.base + path)
    text = text_of(driver, selector)
    return text if wanted in text else None


def choose(driver: WebDriver, element_id: str, text: str) -> None:
    from selenium.webdriver.support.select import Select

    Select(driver.find_element(ID, element_id)).select_by_visible_text(text)


def console_tour(driver: WebDriver, flow: Flow, bus_name: str) -> None:
    p = flow.p
    # Given the backload form: a dry run of two days of loads
    driver.get(flow.base + "/console/backload")
    choose(driver, "backload-phase", f"{p}load:hourly (etl.toml)")
    driver.find_element(ID, "backload-from").send_keys("2024-01-30")
    driver.find_element(ID, "backload-to").send_keys("2024-01-31")
    driver.find_element(ID, "backload-preview").click()
    status = wait_for(lambda: open_status(driver), "the dry run")
    assert status.startswith("DRY RUN ONLY: phase found in etl.toml")
    planned = [row.find_elements(CSS, "td")[0].text
               for row in driver.find_elements(CSS, "#backload-tasks tbody tr")]
    assert len(planned) == 2
    screenshot(driver, f"console-backload-preview-{bus_name}")
    # When it is executed: exactly the previewed tasks are sent
    driver.find_element(ID, "backload-execute").click()
    # (the preview's status line shows until the browser has the answer)
    executed = wait_for(lambda: (text := open_status(driver)) and not text.startswith("DRY RUN") and text,
                        "the execution")
    assert executed == "Executed: sent 2 tasks."
    sent = [a.text for a in driver.find_elements(CSS, "#backload-sent a.task-id")]
    assert sent == planned
    screenshot(driver, f"console-backload-sent-{bus_name}")
    asyncio.run(work(flow, sent))

    # Then the tasks page shows them all (the retried load is running again)
    # (the file's task and the retry are recorded as flow reads them: wait for every row,
    # not only the count, which the retry of a load reaches too)
    wanted = (f"{p}load:hourly", f"{p}report", f"{p}landing")
    wait_for(lambda: open_page(driver, flow, "/console/tasks", "#pager", "5 tasks")
             and all(name in text_of(driver, "#recap") for name in wanted), "5 tasks, every type")
    screenshot(driver, f"console-tasks-{bus_name}")
    # filtered to the audits that raised an alert
    choose(driver, "filter-type", f"{p}audit")
    choose(driver, "filter-result", "alert")
    driver.find_element(ID, "filter-submit").click()
    wait_for(lambda: "page 1 of 1 · 1 task" in text_of(driver, "#pager"), "the filter")
    [row] = driver.find_elements(CSS, "#tasks tbody tr")
    assert HOSTILE in row.text  # markup shown as text, not run
    screenshot(driver, f"console-tasks-filtered-{bus_name}")
    # following the audit's id to its chain: the load, its report and the audit
    row.find_element(CSS, "a.task-id").click()
    wait_for(lambda: driver.find_elements(CSS, "#chain-id"), "the chain page")
    headings = dict(h.text.split() for h in driver.find_elements(CSS, "section.chain-task h3"))
    assert headings == {f"{p}load:hourly": "complete", f"{p}report": "running", f"{p}audit": "alert"}
    screenshot(driver, f"console-chain-{bus_name}")

    alerts = wait_for(lambda: open_page(driver, flow, "/console/alerts", "#alerts", f"{p}audit"), "the alert")
    assert HOSTILE in alerts
    screenshot(driver, f"console-alerts-{bus_name}")
    files = wait_for(lambda: open_page(driver, flow, "/console/files", "#files", "orders.csv"), "the file")
    assert f"{p}landing" in files
    screenshot(driver, f"console-files-{bus_name}")
    driver.get(flow.base + "/console/workflows")
    nodes = driver.find_elements(CSS, "svg.workflow-graph a.phase-node")
    assert len(nodes) == 4 and len(driver.find_elements(CSS, "svg.workflow-graph path.edge")) == 2
    screenshot(driver, f"console-workflows-{bus_name}")
    about = wait_for(lambda: open_page(driver, flow, "/console/about", "#about", "sqlite"), "about")
    assert "taskbus" in about and "30d" in about
    screenshot(driver, f"console-about-{bus_name}")


def open_status(driver: WebDriver) -> str | None:
    return text_of(driver, "#backload-status") or None


def test_the_console_on_the_file_bus(browser: WebDriver, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with live_flow(tmp_path, f"file:{tmp_path / 'data'}/?follow=1&poll=50ms", "") as flow:
        console_tour(browser, flow, "file")


@pytest.mark.jetstream
def test_the_console_on_jetstream(browser: WebDriver, tmp_path: Path, jetstream_server: NatsServer) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}-"  # the server is shared by the session
    with live_flow(tmp_path, f"jetstream://127.0.0.1:{jetstream_server.port}", prefix) as flow:
        console_tour(browser, flow, "jetstream")
