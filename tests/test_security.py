"""Secrets stay secret: never in logs, --show-config, /stats or /metrics; what listens binds
to localhost unless told; the http taskmaster refuses requests without its token."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from task.bus.registry import open_consumer, open_producer
from task.cli import COMMANDS, _load_app, run_command
from task.credentials import Credentials
from task.settings import WorkerSettings, load_settings
from task.status import StatusServer
from task.url import redact_url
from tests.servers.nats import NatsServerFactory
from tests.servers.ports import free_port
from tests.servers.tls import make_tls_files

PASSWORD = "hunter2-pw"
TOKEN = "qwerty-token"
SECRETS = (PASSWORD, TOKEN, "p@ss", "p%40ss")


def assert_no_secret(text: str, where: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} in {where}: {text[:2000]}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"nats://alice:{PASSWORD}@127.0.0.1:4222", "nats://alice:***@127.0.0.1:4222"),
        ("nats://alice:p%40ss@h:1,h2:2", "nats://alice:***@h:1,h2:2"),
        ("nats://alice:p@ss@h:1", "nats://alice:***@h:1"),
        (f"nats://h:1?name=w&token={TOKEN}", "nats://h:1?name=w&token=***"),
        (f"kafka://alice:{PASSWORD}@h:9092?sasl=plain", "kafka://alice:***@h:9092?sasl=plain"),
        (f"cassandra://u:{PASSWORD}@h:9042/ks?consistency=quorum", "cassandra://u:***@h:9042/ks?consistency=quorum"),
        ("file:./taskbus-data/?follow=1", "file:./taskbus-data/?follow=1"),
        ("tests.apps.e2e_worker:Echo", "tests.apps.e2e_worker:Echo"),
    ],
)
def test_urls_are_shown_with_their_secrets_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "file:{tmp}/", "memory:security", "nop:",
        f"nats://alice:{PASSWORD}@127.0.0.1:1?token={TOKEN}",
        f"jetstream://alice:{PASSWORD}@127.0.0.1:1?token={TOKEN}",
        f"kafka://alice:{PASSWORD}@127.0.0.1:1?sasl=plain",
        "nsq://127.0.0.1:1",
    ],
)
def test_no_bus_puts_a_secret_in_its_info(url: str, tmp_path: Any) -> None:
    # info() is what /stats and /metrics show of the consumer and the producer
    url = url.format(tmp=tmp_path)
    creds = Credentials(user="alice", password=PASSWORD, token=TOKEN)
    consumer = open_consumer(url, topic="t", channel="c", prefetch=1, credentials=creds)
    producer = open_producer(url, credentials=creds)
    shown = json.dumps([consumer.info(), producer.info()], default=str)
    assert_no_secret(shown, f"info() of {url}")


@pytest.mark.parametrize(
    "url",
    [
        f"nats://alice:{PASSWORD}@127.0.0.1:1?token={TOKEN}",
        f"jetstream://alice:{PASSWORD}@127.0.0.1:1?token={TOKEN}",
        f"kafka://alice:{PASSWORD}@127.0.0.1:1?sasl=plain",
        "nsq://127.0.0.1:1",  # ConnectionSettings.auth_secret
    ],
)
def test_the_repr_of_a_buses_options_hides_its_secrets(url: str) -> None:
    creds = Credentials(user="alice", password=PASSWORD, token=TOKEN)
    consumer = open_consumer(url, topic="t", channel="c", prefetch=1, credentials=creds)
    producer = open_producer(url, credentials=creds)
    assert_no_secret(repr(vars(consumer)) + repr(vars(producer)), f"the repr of {url}'s parts")


def test_a_worker_that_cannot_connect_names_the_bus_with_secrets_masked(tmp_path: Any) -> None:
    # Given secrets in the URL (password, token) and in the environment
    url = f"nats://alice:{PASSWORD}@127.0.0.1:{free_port()}?token={TOKEN}&connect_timeout=1s"
    env = {**os.environ, "TASK_BUS_PASSWORD": "p@ss", "TASK_LOG_FORMAT": "json"}
    # When the worker fails to connect
    done = subprocess.run(
        [sys.executable, "-m", "task.cli", "worker", "nop", "--type", "t", "--bus", url, "--log-level", "debug"],
        check=False, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    # Then its error names the bus, masked, and no secret is anywhere in its output
    assert done.returncode == 1
    assert "alice:***@127.0.0.1" in done.stderr and "token=***" in done.stderr
    assert_no_secret(done.stdout + done.stderr, "the output of a failed worker")


def secret_fields(settings_cls: type[Any]) -> list[str]:
    return [name for name, info in settings_cls.model_fields.items() if info.annotation is SecretStr]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_show_config_masks_every_secret_of_every_command(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_cls = _load_app(command).Settings
    for name in secret_fields(settings_cls):
        monkeypatch.setenv(f"TASK_{name.upper()}", PASSWORD)
    argv = [command]
    if "bus" in settings_cls.model_fields:
        argv += ["--bus", f"nats://alice:p%40ss@127.0.0.1:4222?token={TOKEN}"]
    if "ledger" in settings_cls.model_fields:
        argv += ["--ledger", f"cassandra://u:{PASSWORD}@127.0.0.1:9042/ks"]
    assert run_command([*argv, "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert_no_secret(shown, f"taskbus {command} --show-config")
    for name in secret_fields(settings_cls):
        assert f'{name} = "***"' in shown


@pytest.mark.nats
async def test_a_running_worker_keeps_secrets_out_of_logs_stats_and_metrics(
    nats_servers: NatsServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a nats-server that requires a user and password, and a worker given the
    # password in its settings and a token in its URL
    from task.apps.worker import WorkerApp

    server = nats_servers("--user", "alice", "--pass", PASSWORD)
    caplog.set_level(logging.DEBUG)
    settings = load_settings(
        WorkerSettings, None, worker="nop", type="secure", bus=f"{server.url}?name=w",
        bus_user="alice", bus_password=PASSWORD, status_port=free_port(),
    )
    app = WorkerApp(settings)
    running = asyncio.create_task(app.run())
    try:
        # When it runs and an operator reads its status endpoint
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{settings.status_port}"
            for _ in range(200):
                try:
                    async with http.get(f"{base}/healthz") as answer:
                        if answer.status == 200 and app.launcher and app.launcher.stats()["consumer"]:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            async with http.get(f"{base}/stats") as answer:
                stats = await answer.text()
            async with http.get(f"{base}/metrics") as answer:
                metrics = await answer.text()
    finally:
        await app.stop()
        assert await asyncio.wait_for(running, 30) == 0
    # Then the bus is named, and no secret is in what it served or logged
    assert f"127.0.0.1:{server.port}" in stats and "taskbus_tasks_in_flight" in metrics
    assert_no_secret(stats, "/stats")
    assert_no_secret(metrics, "/metrics")
    assert_no_secret("\n".join(r.getMessage() for r in caplog.records), "the log")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_everything_that_listens_binds_to_localhost_by_default(command: str) -> None:
    fields = _load_app(command).Settings.model_fields
    for name in ("status_host", "host"):
        if name in fields:
            assert fields[name].default == "127.0.0.1", f"taskbus {command} --{name}"


async def test_a_status_endpoint_listens_on_the_loopback_address_only() -> None:
    server = StatusServer.for_app("cron", dict, host="127.0.0.1", port=free_port())
    assert server is not None
    async with server:
        assert server._server is not None
        assert {sock.getsockname()[0] for sock in server._server.sockets} == {"127.0.0.1"}
    assert StatusServer(dict).host == "127.0.0.1"


async def test_the_http_taskmaster_requires_its_token_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from task.apps.http import HttpApp, HttpSettings

    monkeypatch.setenv("TASK_TOKEN", TOKEN)  # as a Kubernetes Secret would pass it
    app = HttpApp.from_settings(load_settings(HttpSettings, None, bus="memory:security-http", port=0))
    task = {"type": "t", "info": "x"}
    async with app, aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{app.port}"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with http.post(f"{url}/task", json=task, headers=headers) as answer:
                assert answer.status == 401
                assert_no_secret(await answer.text(), "a 401 answer")
        async with http.get(f"{url}/stats") as answer:
            assert answer.status == 401
        async with http.get(f"{url}/healthz") as answer:
            assert answer.status == 200
        async with http.post(f"{url}/task", json=task, headers={"Authorization": f"Bearer {TOKEN}"}) as answer:
            assert answer.status == 201


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate it signed."""
    return make_tls_files(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(nats_servers: NatsServerFactory, certs: dict[str, str]) -> str:
    """The URL of a nats-server that speaks only TLS and requires a client certificate."""
    server = nats_servers("--tls", "--tlscert", certs["server_cert"], "--tlskey", certs["server_key"],
                          "--tlscacert", certs["ca"], "--tlsverify")
    return f"{server.url}?connect_timeout=2s"


@pytest.mark.nats
async def test_tls_settings_present_the_client_certificate_the_server_requires(
    tls_server: str, certs: dict[str, str]
) -> None:
    from task.errors import BusError

    # When the settings name our CA and client certificate, Then a task gets through
    trusted = Credentials(tls_ca=certs["ca"], tls_cert=certs["client_cert"], tls_key=certs["client_key"])
    async with open_producer(tls_server, credentials=trusted) as producer:
        await producer.send("t", b'{"type":"t","info":""}')
    # And without a client certificate the server refuses us, with one clear error
    producer = open_producer(tls_server, credentials=Credentials(tls_ca=certs["ca"]))
    # (TLS 1.3 refuses after the handshake: the reason reads "certificate required" or,
    # when the server closes first, "Broken pipe"; either way it is one clear BusError)
    with pytest.raises(BusError, match="cannot connect"):
        await asyncio.wait_for(producer.start(), 10)
    await producer.stop()


@pytest.mark.nats
async def test_tls_refuses_a_server_whose_certificate_our_ca_did_not_sign(
    tls_server: str, certs: dict[str, str]
) -> None:
    from task.errors import BusError

    # Given no tls_ca: the system CAs, which did not sign the test server's certificate
    producer = open_producer(tls_server, credentials=Credentials(tls_cert=certs["client_cert"], tls_key=certs["client_key"]))
    try:
        with pytest.raises(BusError, match="cannot connect"):
            await asyncio.wait_for(producer.start(), 4)  # connect_timeout is 2 s
    finally:
        await producer.stop()
