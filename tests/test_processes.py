"""``taskbus worker --processes N``: N launcher processes share one queue group."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from task import Task
from task.bus.registry import open_consumer, open_producer
from tests.servers.nats import NatsServer
from tests.servers.ports import free_port

pytestmark = pytest.mark.nats


def _two_free_ports() -> int:
    """A port P with P + 1 free too: the second child serves its status on P + 1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def _stats(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except OSError:
        return None


@pytest.mark.timeout(90)
async def test_two_processes_share_the_work_and_stop_on_sigterm(nats_server: NatsServer, tmp_path: Path) -> None:
    # Given a worker command running two launcher processes on core NATS
    port = _two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_")}
    parent = subprocess.Popen(  # noqa: ASYNC220 - a quick spawn in a test
        [sys.executable, "-m", "task.cli", "worker", "nop", "--bus", nats_server.url,
         "--max-in-progress", "5", "--processes", "2", "--status-port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (_stats(port) is None or _stats(port + 1) is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _stats(port) is not None and _stats(port + 1) is not None, "children did not start"
        done = open_consumer(nats_server.url, topic="done", prefetch=100)
        await done.start()
        # When 200 slow-ish tasks are sent
        tasks = [Task.new("nop", "sleep=20ms") for _ in range(200)]
        async with open_producer(nats_server.url) as producer:
            for task in tasks:
                await producer.send("nop", task.to_json())
        seen: set[str] = set()
        while len(seen) < len(tasks):
            message = await asyncio.wait_for(done.msg(), 20)
            assert message is not None
            seen.add(Task.from_json(message.body).id)
        await done.stop()
        # Then every task is done once, and both processes did some of them
        assert seen == {t.id for t in tasks}
        finished = [_stats(p)["tasks_finished"] for p in (port, port + 1)]  # type: ignore[index]
        assert sum(finished) == 200 and min(finished) > 0  # type: ignore[type-var, arg-type]
    finally:
        # And SIGTERM to the parent stops both children cleanly
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=30)
    assert parent.returncode == 0, err
