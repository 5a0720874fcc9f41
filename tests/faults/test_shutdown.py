"""Graceful shutdown under load: SIGTERM to a worker with 100 tasks in flight.

Half the tasks finish on their own inside ``worker_kill_time``; the other half would run for
ten minutes and are cancelled at ``worker_kill_time``. Every one of the 100 ends with a done
task (``complete``, or ``error`` "worker forced to close"), every one is acknowledged, the
process exits 0, and the tasks still waiting behind them are left on the bus for the next
worker, which runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from task.bus.file_options import parse_offset
from task.bus.jetstream_options import stream_name
from task.launcher import FORCED_CLOSE_MSG
from task.task import Task
from tests.faults.helpers import (
    DoneTasks,
    Figures,
    TaskbusProcess,
    http_json,
    publish,
    suffix,
    until,
)
from tests.servers.nats import NatsServer
from tests.servers.ports import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

IN_FLIGHT = 100
WAITING = 20
KILL_TIME = "5"


def _tasks(task_type: str) -> list[Task]:
    # even: 2 s, done well inside the kill time; odd: 600 s, only a cancel ends them
    flight = [Task.new(task_type, "2" if i % 2 == 0 else "600", id=f"f{i}") for i in range(IN_FLIGHT)]
    return flight + [Task.new(task_type, "0", id=f"w{i}") for i in range(WAITING)]


async def _running(port: int) -> int:
    try:
        stats = await http_json(port)
    except (OSError, ValueError):
        return -1
    return int(stats["tasks_running"])


async def _shutdown_run(request: pytest.FixtureRequest, tmp_path: Path, bus: str, url: str,
                        backlog_url: str, collect_url: str) -> tuple[str, int]:
    task_type = f"stop-{suffix()}"
    done_topic = f"{task_type}-done"
    tasks = _tasks(task_type)
    await publish(backlog_url, task_type, (t.to_json() for t in tasks), concurrency=50)
    port = free_port()
    common = ["worker", "tests.faults.stubborn:Stubborn", "--bus", url, "--type", task_type,
              "--done-topic", done_topic, "--max-in-progress", str(IN_FLIGHT)]
    async with DoneTasks(collect_url, done_topic) as done:
        done.keep_bodies = True
        worker = TaskbusProcess([*common, "--worker-kill-time", KILL_TIME, "--status-port", str(port)],
                                tmp_path / "worker.log")
        try:
            # Given 100 tasks running and 20 more waiting on the bus
            await until(lambda: _running_is(port, IN_FLIGHT), "100 tasks in flight", timeout=60, every=0.05)
            # When the worker gets SIGTERM
            worker.terminate()
            # Then it exits 0 once every task in flight has ended one way or the other
            assert await worker.wait(60) == 0, worker.output()
        finally:
            await worker.close()
        flight_ids = {t.id for t in tasks[:IN_FLIGHT]}
        await until(lambda: done.covers(flight_ids), "a done task for each of the 100", timeout=30)
        ended = {}
        for body in done.bodies:
            task = Task.from_json(body)
            ended[task.id] = (task.result, task.msg)
        assert set(ended) == flight_ids, "a waiting task was started after SIGTERM"
        for task in tasks[:IN_FLIGHT]:
            expected = ("complete", "slept 2s") if task.info == "2" else ("error", FORCED_CLOSE_MSG)
            assert ended[task.id] == expected, task.id
        # And the 20 waiting tasks were given back, not lost: the next worker runs them
        nxt = TaskbusProcess([*common, "--lifetime", str(WAITING)], tmp_path / "next.log")
        try:
            assert await nxt.wait(60) == 0, nxt.output()
        finally:
            await nxt.close()
        await until(lambda: done.covers(t.id for t in tasks), "the waiting tasks done", timeout=30)
        await done.settle(quiet=0.5)
        Figures.of(request.node.name, bus, [t.id for t in tasks], done.counts,
                   forced_closed=IN_FLIGHT // 2, finished=IN_FLIGHT // 2).record()
        assert sum(done.counts.values()) == len(tasks), "a task ran twice after a clean shutdown"
    return task_type, port


async def _running_is(port: int, wanted: int) -> bool:
    return await _running(port) == wanted


async def test_file_bus(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    directory = tmp_path / "bus"
    url = f"file:{directory}/?offset=1&follow=1&poll=50ms"
    task_type, _ = await _shutdown_run(request, tmp_path, "file", url, f"file:{directory}/",
                                       f"file:{directory}/?follow=1&poll=20ms")
    # every line is acknowledged: the saved offset is the end of the file
    tasks_file = directory / f"{task_type}.jsonl"
    offset = parse_offset((directory / f"{task_type}.jsonl.{task_type}.offset").read_text()).offset
    assert offset == tasks_file.stat().st_size


@pytest.mark.jetstream
async def test_jetstream(request: pytest.FixtureRequest, tmp_path: Path, jetstream_server: NatsServer) -> None:
    url = f"jetstream://{jetstream_server.hostport}?ack_wait=60s"
    task_type, _ = await _shutdown_run(request, tmp_path, "jetstream", url, url, url)
    # every message is acknowledged: none pending an ack, none left to deliver
    client = await nats.connect(jetstream_server.url)
    try:
        info = await client.jetstream().consumer_info(stream_name(task_type), task_type)
    finally:
        await client.close()
    assert (info.num_ack_pending, info.num_pending) == (0, 0), json.dumps(info.as_dict())


async def test_a_fast_worker_on_a_large_file_backlog_still_answers_sigterm(tmp_path: Path) -> None:
    # Given a worker racing through a large file backlog with a worker that never waits
    from task.bench.memory import fill

    backlog = 100_000
    directory = tmp_path / "bus"
    await fill(f"file:{directory}/", "nop", backlog, 100)
    port = free_port()
    worker = TaskbusProcess(["worker", "nop", "--bus", f"file:{directory}/", "--max-in-progress", "100",
                             "--status-port", str(port)], tmp_path / "worker.log")
    try:
        # When /stats shows it at work (served at all: the loop is not kept by the runners)
        async def working() -> bool:
            try:
                return int((await http_json(port))["tasks_finished"]) > 0
            except (OSError, ValueError):
                return False

        await until(working, "the worker to serve /stats while it works", timeout=60, every=0.05)
        # and it gets SIGTERM
        worker.terminate()
        assert await worker.wait(60) == 0, worker.output()
    finally:
        await worker.close()
    # Then it stopped part-way instead of running the whole backlog first
    done = (directory / "done.jsonl").read_bytes().count(b"\n")
    assert 0 < done < backlog
