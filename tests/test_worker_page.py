"""The worker's status page in a real browser, against a live ``taskbus worker`` (issue 18).

A person on call opens ``http://host:status-port/``: the health (and why not), the task in
flight and for how long, the backlog, the counts. Tested on the file bus and on JetStream,
where the bus server is stopped under the running worker and brought back. Screenshots go
to ``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from task import Task
from task.bus.registry import open_producer
from task.health import Verdict
from task.web.page import stylesheet
from task.web.worker_page import render_status_page
from tests.browser import browser, screenshot, wait_for
from tests.servers.nats import NatsServerFactory
from tests.servers.ports import free_port

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["browser"]  # the fixture, imported so pytest finds it here

#: selenium's ``CSS`` and ``ID``, so collecting this module needs no selenium
CSS, ID = "css selector", "id"
TASKBUS = str(Path(sys.executable).parent / "taskbus")

SLOW_WORKER = '''
import asyncio
from pathlib import Path

from task import Worker, completed


class Slow(Worker):
    """Holds each task until the file ``release`` exists (the test creates it)."""

    task_type = "slow"

    def __init__(self, info):
        self.info = info

    async def do_task(self, ctx):
        while not Path("release").exists() and not ctx.stopping:
            await asyncio.sleep(0.02)
        return completed("released %s", self.info)
'''

#: an id with markup: the page must show it as text (ids come from the bus)
MARKUP_ID = "<b>task-1</b>"
IDS = [MARKUP_ID, "task-2", "task-3"]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


@contextmanager
def live_worker(cwd: Path, bus: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """``taskbus worker`` running the slow worker on ``bus`` with its status on ``port``;
    its tasks released and the process stopped (SIGTERM) after."""
    (cwd / "slow_worker.py").write_text(SLOW_WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    process = subprocess.Popen(
        [TASKBUS, "worker", "slow_worker:Slow", "--bus", bus, "--status-port", str(port),
         "--worker-kill-time", "5"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process
    finally:
        (cwd / "release").touch()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr


def show(driver: WebDriver, port: int, selector: str, wanted: str) -> str | None:
    """Reload the page; the text of ``selector`` when it contains ``wanted``."""
    driver.get(f"http://127.0.0.1:{port}/")
    found = driver.find_elements(CSS, selector)
    text = found[0].text if found else ""
    return text if wanted in text else None


def in_flight_ids(driver: WebDriver) -> list[str]:
    return [cell.text for cell in driver.find_elements(CSS, "#in-flight tbody td:first-child")]


def write_tasks(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(Task.new("slow", f"info {i}", id=i).to_json() + b"\n" for i in IDS))


async def send_tasks(url: str) -> None:
    async with open_producer(url) as producer:
        for i in IDS:
            await producer.send("slow", Task.new("slow", f"info {i}", id=i).to_json())


def test_the_page_shows_the_running_task_and_the_backlog_on_the_file_bus(
    browser: WebDriver, tmp_path: Path,
) -> None:
    # Given a slow worker on the file bus, three tasks in its file, one running
    write_tasks(tmp_path / "data" / "slow.jsonl")
    port = free_port()
    with live_worker(tmp_path, "file:./data/?offset=1", port):
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, "/readyz 200")
        # When the operator opens the page
        # Then it shows the task in flight (its id as text, markup and all) and for how long
        wait_for(lambda: show(browser, port, "#in-flight", MARKUP_ID), "the task in flight")
        assert in_flight_ids(browser) == [MARKUP_ID]
        assert "running for" in browser.find_element(CSS, "#in-flight thead").text
        # and the backlog: the file holds three unacknowledged lines (the running one counts)
        waiting = wait_for(lambda: show(browser, port, "#card-waiting .value", "3"), "the backlog")
        assert waiting == "3"
        assert "waiting 3" in browser.find_element(ID, "backlog").text
        assert browser.find_element(ID, "health-badge").text == "HEALTHY"
        assert browser.title == "taskbus worker · slow"
        screenshot(browser, "worker-page-file")
        # and at 3 a.m. with the system in dark mode, the page is dark too
        try:
            dark(browser, True)
            browser.get(f"http://127.0.0.1:{port}/")
            assert body_background(browser) == "rgb(21, 23, 26)"
            screenshot(browser, "worker-page-file-dark")
        finally:
            dark(browser, False)
        browser.get(f"http://127.0.0.1:{port}/")
        assert body_background(browser) == "rgb(251, 251, 250)"


def dark(driver: WebDriver, on: bool) -> None:
    """Make the browser report (or stop reporting) a system in dark mode."""
    features = [{"name": "prefers-color-scheme", "value": "dark" if on else ""}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})  # type: ignore[attr-defined]


def body_background(driver: WebDriver) -> str:
    return str(driver.execute_script("return getComputedStyle(document.body).backgroundColor"))


@pytest.mark.jetstream
@pytest.mark.faults
def test_the_page_says_why_the_worker_is_unhealthy_while_jetstream_is_down(
    browser: WebDriver, tmp_path: Path, nats_servers: NatsServerFactory,
) -> None:
    # Given a slow worker on JetStream with three tasks, one running
    server = nats_servers(jetstream=True)
    bus = f"jetstream://127.0.0.1:{server.port}?reconnect_wait=100ms"
    asyncio.run(send_tasks(bus))
    port = free_port()
    with live_worker(tmp_path, bus, port):
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, "/readyz 200")
        wait_for(lambda: show(browser, port, "#in-flight", MARKUP_ID), "the task in flight")
        assert in_flight_ids(browser) == [MARKUP_ID]
        # the other two wait on the stream; the running one is JetStream's ack-pending
        wait_for(lambda: show(browser, port, "#card-waiting .value", "2"), "the backlog of 2")
        assert "in flight (bus) 1" in browser.find_element(ID, "backlog").text
        assert browser.find_element(ID, "health-badge").text == "HEALTHY"
        screenshot(browser, "worker-page-jetstream")
        # When the bus server goes away
        server.stop()
        reason = f"bus: connection to {bus} down, reconnecting"
        # Then /healthz answers 503 with the reason, and the page says the same
        assert wait_for(lambda: http_get(port, "/healthz")[0] == 503, "/healthz 503")
        assert http_get(port, "/healthz") == (503, reason + "\n")
        wait_for(lambda: show(browser, port, "#health", reason), "the reason on the page")
        assert browser.find_element(ID, "health-badge").text == "UNHEALTHY"
        assert in_flight_ids(browser) == [MARKUP_ID]  # the task is still running meanwhile
        screenshot(browser, "worker-page-jetstream-down")
        # When it is back: 200 again and the page is healthy, the same worker still running
        server.start()
        assert wait_for(lambda: http_get(port, "/healthz") == (200, "ok\n"), "/healthz 200 again")
        wait_for(lambda: show(browser, port, "#health-badge", "HEALTHY"), "the page healthy again")
        screenshot(browser, "worker-page-jetstream-back")


def test_text_from_the_bus_is_escaped_everywhere_on_the_page() -> None:
    hostile = '<script>alert("x")</script>'
    stats = {
        "task_type": hostile, "tasks_running": 1,
        "in_flight": [{"id": hostile, "type": hostile, "job": "j&k", "started": "2026-01-01T00:00:00Z"}],
        "backlog": {"topic": hostile, "channel": "c", "waiting": 1, "notes": [hostile], "age_s": 1},
        "consumer": {"topic": hostile},
    }
    page = render_status_page("worker", stats, Verdict(True, (hostile,)), now=1_767_225_660).decode()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "j&amp;k" in page
    assert "1m" in page  # running for, from the task's start to now


async def test_any_apps_status_port_serves_a_page_of_its_stats() -> None:
    from task.status import StatusServer

    async with StatusServer(lambda: {"tasks_sent": 12, "next_run": "05:00"}, name="cron") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/html; charset=utf-8" in head
    page = body.decode()
    assert "<title>taskbus cron</title>" in page and "HEALTHY" in page
    assert "<th scope=\"row\">tasks_sent</th><td>12</td>" in page
    assert 'href="/style.css"' in page and 'http-equiv="refresh"' in page


def test_the_stylesheet_follows_the_systems_light_or_dark_scheme() -> None:
    css = stylesheet().decode()
    assert "@media (prefers-color-scheme: dark)" in css and "color-scheme: light dark" in css


async def test_stopping_the_status_server_ends_a_browsers_idle_connection() -> None:
    # Given a browser's pre-opened connection that has sent nothing yet (chromium opens one
    # ahead of the next reload); before the fix its handler outlived stop() and was cancelled
    # at exit, where Python 3.11 logs the cancellation as a traceback on the worker's stderr
    from task.status import StatusServer

    server = StatusServer(dict)
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    while not [t for t in asyncio.all_tasks() if "_handle" in repr(t.get_coro())]:
        await asyncio.sleep(0)  # until the server has accepted it
    # When the app stops its status server
    await server.stop()
    # Then no handler is left running and the connection is closed
    assert [t for t in asyncio.all_tasks() if "_handle" in repr(t.get_coro())] == []
    assert await reader.read() == b""
    writer.close()


def test_a_missing_browser_is_named_with_the_packages_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.browser

    monkeypatch.setattr(tests.browser, "CHROMEDRIVER", tmp_path / "chromedriver")
    assert tests.browser.missing() == (
        f"{tmp_path / 'chromedriver'} is missing: apt-get install chromium chromium-driver (.ci/run does)")


def test_tag_takes_any_attribute_including_name_and_escapes_values() -> None:
    from task.web.page import tag

    assert tag("input", type="hidden", name="day", value='a"b<') == (
        '<input type="hidden" name="day" value="a&quot;b&lt;"></input>')
    assert tag("td", "x", class_="num", data_id=3, hidden=True, title=None) == (
        '<td class="num" data-id="3" hidden>x</td>')
