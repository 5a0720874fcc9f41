"""taskbus http: real requests against the app on a free loopback port, tasks on a MemoryBroker."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from task.apps.http import HttpApp, HttpSettings
from task.bus.memory import Fault, MemoryBroker, MemoryProducer
from task.ledger.memory import MemoryLedger
from task.settings import load_settings, show_config
from task.task import Task
from tests.servers.ports import free_port

Post = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
async def server(broker: MemoryBroker, ledger: MemoryLedger) -> AsyncIterator[Callable[..., Any]]:
    """Starts an HttpApp on a free port with the given options; stops every one it started."""
    apps: list[HttpApp] = []

    async def start(**kw: Any) -> HttpApp:
        app = HttpApp(producer=MemoryProducer(broker), ledger=ledger, port=free_port(), **kw)
        await app.__aenter__()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.__aexit__(None, None, None)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def requester(client: aiohttp.ClientSession, app: HttpApp) -> Post:
    async def call(method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{app.port}{path}"
        async with client.request(method, url, data=data, headers=headers) as response:
            return response.status, await response.json()

    return call


def sent(broker: MemoryBroker, topic: str) -> list[Task]:
    return [Task.from_json(b) for b in broker.bodies(topic)]


async def test_post_one_task_and_a_list(server: Any, client: aiohttp.ClientSession,
                                        broker: MemoryBroker, ledger: MemoryLedger) -> None:
    call = requester(client, await server())
    status, answer = await call("POST", "/task", {"type": "fetch", "info": "s3://b/x", "job": "j",
                                                  "meta": {"a": "1", "b": ["2", "3"]}})
    assert status == 201 and answer["sent"] == 1
    (task,) = sent(broker, "fetch")
    assert (task.info, task.job, task.meta, task.id) == ("s3://b/x", "j", "a=1&b=2&b=3", answer["ids"][0])
    assert await ledger.find("fetch", task.id) is not None
    status, answer = await call("POST", "/task", [
        {"type": "fetch", "info": "1", "topic": "urgent"},
        {"type": "fetch", "info": "2", "id": "my-id", "meta": "x=y"},
    ])
    assert status == 201 and answer["ids"][1] == "my-id"
    assert [t.info for t in sent(broker, "urgent")] == ["1"]
    assert [(t.info, t.id, t.meta) for t in sent(broker, "fetch")][1] == ("2", "my-id", "x=y")


@pytest.mark.parametrize(
    ("body", "raw", "reason"),
    [
        (None, b"{not json", "body is not JSON"),
        (None, b"", "body is not JSON"),
        ("just a string", None, "a task is a JSON object, got str"),
        ([], None, "an empty list"),
        ({"info": "x"}, None, "type: Field required"),
        ({"type": ""}, None, "type: String should have at least 1 character"),
        ({"type": "t", "info": 5}, None, "info: Input should be a valid string"),
        ({"type": "t", "colour": "red"}, None, "colour: Extra inputs are not permitted"),
        ({"type": "t", "meta": {"a": 1}}, None, "meta"),
        ([{"type": "t"}, {"type": "t", "id": 7}], None, "task 1: id"),
        ([{"type": "t"}] * 4, None, "4 tasks in one request; the limit is 3"),
    ],
)
async def test_bad_tasks_get_400_with_a_reason_and_nothing_is_sent(
    server: Any, client: aiohttp.ClientSession, broker: MemoryBroker,
    body: Any, raw: bytes | None, reason: str,
) -> None:
    call = requester(client, await server(max_tasks=3))
    status, answer = await call("POST", "/task", body, raw=raw)
    assert status == 400
    assert reason in answer["error"]
    assert broker.sent == []


async def test_token_is_required_except_for_healthz(server: Any, client: aiohttp.ClientSession,
                                                    broker: MemoryBroker) -> None:
    call = requester(client, await server(token="s3cret"))
    task = {"type": "t", "info": "x"}
    for token in (None, "wrong", ""):
        status, answer = await call("POST", "/task", task, token=token)
        assert status == 401 and "bearer token" in answer["error"]
    assert (await call("GET", "/stats"))[0] == 401
    assert broker.sent == []
    assert await call("GET", "/healthz") == (200, {"ok": True})
    assert (await call("POST", "/task", task, token="s3cret"))[0] == 201
    status, stats = await call("GET", "/stats", token="s3cret")
    assert status == 200 and stats["unauthorized"] == 4 and stats["sent"] == 1


async def test_batch_creates_one_task_per_step(server: Any, client: aiohttp.ClientSession,
                                               broker: MemoryBroker) -> None:
    call = requester(client, await server())
    status, answer = await call("POST", "/batch", {
        "type": "load", "template": "{slug}", "from": "2024-01-01T22", "to": "2024-01-02T01",
        "meta": {"src": "http"}, "topic": "loads"})
    assert status == 201 and answer["sent"] == 4
    assert (answer["first"], answer["last"]) == ("2024-01-01T22:00:00+00:00", "2024-01-02T01:00:00+00:00")
    tasks = sent(broker, "loads")
    assert [t.info for t in tasks] == ["2024/01/01/22", "2024/01/01/23", "2024/01/02/00", "2024/01/02/01"]
    assert {t.meta for t in tasks} == {"src=http"}


async def test_batch_dry_run_daily_in_a_zone(server: Any, client: aiohttp.ClientSession,
                                             broker: MemoryBroker) -> None:
    call = requester(client, await server(timezone="Europe/Paris"))
    status, answer = await call("POST", "/batch", {
        "type": "t", "template": "{ts}", "from": "2024-03-30T12", "to": "2024-04-01T12",
        "daily": True, "dry_run": True})
    assert status == 200 and broker.sent == []
    assert [t["info"] for t in answer["tasks"]] == ["20240330T120000", "20240331T120000", "20240401T120000"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"type": "t", "template": "x"}, "from: Field required"),
        ({"type": "t", "from": "soon"}, "time 'soon' not understood"),
        ({"type": "t", "from": "2024-01-02", "to": "2024-01-01"}, "to 2024-01-01T00:00:00+00:00 is before"),
        ({"type": "t", "from": "2024-01-01", "to": "2024-02-01"}, "745 tasks, more than the limit 100"),
        ({"type": "t", "from": "2024-01-01", "every": "0h"}, "positive step"),
        ({"type": "t", "from": "2024-01-01", "timezone": "Moon/Base"}, "unknown time zone"),
        ([{"type": "t"}], "a batch is a JSON object, got list"),
    ],
)
async def test_bad_batches_get_400(server: Any, client: aiohttp.ClientSession, broker: MemoryBroker,
                                   body: Any, reason: str) -> None:
    call = requester(client, await server(max_tasks=100))
    status, answer = await call("POST", "/batch", body)
    assert status == 400 and reason in answer["error"], answer
    assert broker.sent == []


async def test_unknown_paths_methods_and_big_bodies_answer_json(server: Any,
                                                                client: aiohttp.ClientSession) -> None:
    call = requester(client, await server(max_body=1024))
    status, answer = await call("GET", "/nope")
    assert status == 404 and "try POST /task" in answer["error"]
    assert (await call("GET", "/task"))[0] == 405
    status, answer = await call("POST", "/task", {"type": "t", "info": "x" * 2000})
    assert status == 413 and "1024 bytes" in answer["error"]


async def test_bus_failure_is_503_with_what_was_sent(server: Any, client: aiohttp.ClientSession,
                                                     broker: MemoryBroker) -> None:
    call = requester(client, await server())
    broker.inject(Fault.SEND_FAILS)
    status, answer = await call("POST", "/task", {"type": "t"})
    assert status == 503 and answer["sent"] == 0 and "injected fault" in answer["error"]
    assert (await call("POST", "/task", {"type": "t"}))[0] == 201


async def test_stop_ends_run_and_settings_bind_localhost(broker: MemoryBroker) -> None:
    settings = load_settings(HttpSettings, None, bus="memory:http-test", port=str(free_port()))
    assert settings.host == "127.0.0.1"
    app = HttpApp.from_settings(settings)
    async with app:
        await app.stop()
        assert await app.run() == 0
    shown = show_config(load_settings(HttpSettings, None, token="t0ken"))
    assert 'token = "***"' in shown and "t0ken" not in shown


async def test_the_start_up_line_says_where_tasks_are_taken(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = load_settings(HttpSettings, None, bus="memory:http-log-test", port=str(port),
                             token="s3cret")
    with caplog.at_level(logging.INFO, "task.apps.http"):
        async with HttpApp.from_settings(settings):
            pass
    [start] = [m for m in caplog.messages if m.startswith("http starting:")]
    assert start == (f"http starting: listen=http://127.0.0.1:{port}/task bus=memory:http-log-test "
                     "token=set max_tasks=10000 timezone=UTC")
    assert "s3cret" not in caplog.text
