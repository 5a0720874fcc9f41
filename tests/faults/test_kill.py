"""A worker SIGKILLed at random points of a run and started again each time, on every bus here.

At-least-once buses (file with ``?offset=1``, JetStream, Kafka) must end with every task done
at least once: a kill may double a task (done sent, ack lost with the process), never lose
one. Core NATS is at-most-once: what a killed worker held, or what was published while no
worker listened, is gone; the test reports that loss, then shows that the SQLite ledger and
``taskbus recover --once`` bring every task to done.

Counts are small enough for CI; raise them by hand: ``TASK_FAULT_TASKS=50000
TASK_FAULT_KILLS=20 pytest -m faults tests/faults/test_kill.py -s``. ``TASK_FAULT_SEED``
replays a run's kill points.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from task.ledger.sqlite import SqliteLedger
from tests.faults.helpers import (
    DoneTasks,
    Figures,
    TaskbusProcess,
    count_from_env,
    make_tasks,
    publish,
    run_with_kills,
    suffix,
    until,
)
from tests.servers.nats import NatsServer
from tests.servers.ports import free_port

pytestmark = [pytest.mark.faults, pytest.mark.slow]

#: what each task does: a short sleep, so tens of tasks are in flight at every kill
TASK_INFO = "sleep=2ms"
IN_PROGRESS = "20"


def _rng(request: pytest.FixtureRequest) -> random.Random:
    seed = count_from_env("TASK_FAULT_SEED", random.randrange(1 << 30))
    print(f"{request.node.name}: TASK_FAULT_SEED={seed}")
    return random.Random(seed)


def _worker(tmp_path: Path, url: str, task_type: str, done_topic: str, *extra: str) -> Callable[[], TaskbusProcess]:
    """How to start (and start again) the worker of one run; each start logs to its own file.
    Each serves a status endpoint: its log line says the worker is up (see ``_terminate``)."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)

    def start() -> TaskbusProcess:
        log = logs / f"worker-{len(list(logs.iterdir()))}.log"
        return TaskbusProcess(
            ["worker", "nop", "--bus", url, "--type", task_type, "--done-topic", done_topic,
             "--max-in-progress", IN_PROGRESS, "--status-port", str(free_port()), *extra], log)

    return start


#: what a worker logs once it runs (loop and signal handlers in place, bus being opened)
STARTED = "status endpoint on http://"


async def _terminate(worker: TaskbusProcess) -> int:
    """SIGTERM ``worker`` once it has started, and return its exit status.

    The last worker of a run may be seconds old: on Kafka, the done tasks of a killed worker
    that never committed already cover every id, so the run ends while its successor is still
    importing. A SIGTERM that lands before the process can handle signals at all kills it
    (-15), which is a fact of process start-up, not what this test measures: graceful exit of
    a running worker. So wait for the worker to say it runs, then stop it.
    """
    await until(lambda: not worker.running or STARTED in worker.log.read_text(errors="replace"),
                "the last worker to start", timeout=120)
    worker.terminate()
    return await worker.wait()


async def _kill_run(request: pytest.FixtureRequest, tmp_path: Path, bus: str, url: str,
                    collect_url: str, tasks: int, kills: int, *, backlog_url: str | None = None,
                    exits_when_drained: bool = False) -> Figures:
    """Given a backlog of ``tasks``, when the worker is killed ``kills`` times and restarted,
    then every task is done at least once; the figures say how many twice."""
    rng = _rng(request)
    task_type = f"kill-{suffix()}"
    done_topic = f"{task_type}-done"
    batch = make_tasks(task_type, tasks, TASK_INFO)
    ids = [t.id for t in batch]
    await publish(backlog_url or url, task_type, (t.to_json() for t in batch), concurrency=200)
    start = _worker(tmp_path, url, task_type, done_topic)
    async with DoneTasks(collect_url, done_topic) as done:
        worker, made = await run_with_kills(start, done, tasks, kills, rng)
        try:
            if exits_when_drained:
                assert await worker.wait(120) == 0, worker.output()
            await until(lambda: done.covers(ids), "every task done at least once", timeout=120)
            await done.settle(quiet=0.5)
            assert await _terminate(worker) == 0, worker.output()
        finally:
            await worker.close()
        figures = Figures.of(request.node.name, bus, ids, done.counts, kills=made).record()
    assert figures.lost == 0
    assert made == kills, f"the run ended after {made} of {kills} kills; raise TASK_FAULT_TASKS"
    return figures


async def test_file_bus_with_offset(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    directory = tmp_path / "bus"
    await _kill_run(
        request, tmp_path, "file", f"file:{directory}/?offset=1", f"file:{directory}/?follow=1&poll=20ms",
        count_from_env("TASK_FAULT_TASKS", 5000), count_from_env("TASK_FAULT_KILLS", 5),
        backlog_url=f"file:{directory}/", exits_when_drained=True,
    )


@pytest.mark.jetstream
async def test_jetstream(request: pytest.FixtureRequest, tmp_path: Path, jetstream_server: NatsServer) -> None:
    # ack_wait short, so what a killed worker held comes back within the test
    url = f"jetstream://{jetstream_server.hostport}?ack_wait=2s&max_deliver=-1"
    await _kill_run(request, tmp_path, "jetstream", url, url,
                    count_from_env("TASK_FAULT_TASKS", 3000), count_from_env("TASK_FAULT_KILLS", 5))


@pytest.mark.kafka
@pytest.mark.timeout(240)
async def test_kafka(request: pytest.FixtureRequest, tmp_path: Path, kafka_url: str) -> None:
    # a short session timeout, so the group drops a killed member (and rebalances) quickly
    url = kafka_url + "&partitions=4&session_timeout=3s&drain_timeout=2s&commit_interval=200ms"
    await _kill_run(request, tmp_path, "kafka", url, url,
                    count_from_env("TASK_FAULT_TASKS", 2000), count_from_env("TASK_FAULT_KILLS", 3))


@pytest.mark.nats
async def test_core_nats_loses_tasks_and_the_ledger_recovers_them(
    request: pytest.FixtureRequest, tmp_path: Path, nats_server: NatsServer
) -> None:
    rng = _rng(request)
    tasks = count_from_env("TASK_FAULT_TASKS", 3000)
    kills = count_from_env("TASK_FAULT_KILLS", 5)
    task_type = f"kill-{suffix()}"
    done_topic = f"{task_type}-done"
    db = tmp_path / "ledger.db"
    ledger_url = f"sqlite:{db}"
    batch = make_tasks(task_type, tasks, TASK_INFO)
    ids = [t.id for t in batch]
    # Given a taskmaster that records each task in the ledger before it publishes it
    async with SqliteLedger(str(db)) as ledger:
        for task in batch:
            await ledger.created(task)
    start = _worker(tmp_path, nats_server.url, task_type, done_topic, "--ledger", ledger_url)
    async with DoneTasks(nats_server.url, done_topic) as done:
        worker = start()
        made = 0
        try:
            # When it publishes over a few seconds while the worker is killed and restarted
            publishing = asyncio.create_task(
                publish_paced(nats_server.url, task_type, [t.to_json() for t in batch]))
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                worker.kill()
                await worker.wait()
                made += 1
                worker = start()
            await publishing
            await done.settle(quiet=1.0)
            # Then core NATS alone lost tasks: counted, not asserted (it promises at-most-once)
            lost_without_ledger = len(set(ids) - set(done.counts))
            # And recover resends every task the ledger still holds until all are done
            rounds = 0
            while not done.covers(ids) and rounds < 10:
                rounds += 1
                recover = TaskbusProcess(
                    ["recover", "--once", "--ledger", ledger_url, "--bus", nats_server.url,
                     "--older-than", "1", "--created-older-than", "1", "--max-attempts", "20"],
                    tmp_path / "logs" / "recover.log")
                assert await recover.wait() == 0, recover.output()
                await done.settle(quiet=1.5)
            await until(lambda: done.covers(ids), "every task done after recover", timeout=10)
            assert await _terminate(worker) == 0, worker.output()
        finally:
            await worker.close()
        figures = Figures.of(request.node.name, "nats", ids, done.counts, kills=made,
                             lost_without_ledger=lost_without_ledger, recover_rounds=rounds).record()
    assert figures.lost == 0
    # and the ledger caught up: nothing outstanding once every task is done
    async with SqliteLedger(str(db)) as ledger:
        left = [r.task.id async for r in ledger.outstanding(task_type, 0)]
    assert left == []


async def publish_paced(url: str, topic: str, bodies: list[bytes], seconds: float = 4.0) -> None:
    """Publish over about ``seconds`` (a taskmaster at work), so kills fall in the middle of it."""
    from task.bus.registry import open_producer

    pause = seconds / max(1, len(bodies) // 20)
    async with open_producer(url) as producer:
        for i, body in enumerate(bodies):
            await producer.send(topic, body)
            if i % 20 == 19:
                await asyncio.sleep(pause)
