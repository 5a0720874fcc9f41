"""The broker stopped and started again in the middle of a run.

nats-server with JetStream comes back on the same port with the same storage: the worker,
the taskmaster and the done reader reconnect by themselves, and every task whose publish was
acknowledged is done. Tansu keeps everything in memory, so its restart forgets the topics,
the backlog and the group's offsets: the clients reconnect, and ``taskbus recover`` resends
from the SQLite ledger every task the broker forgot. Done tasks go to a file bus there
(``--out-bus``), because a done topic on Tansu would be forgotten too.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from task.bus.base import Producer
from task.bus.registry import open_producer
from task.errors import BusError
from task.ledger.sqlite import SqliteLedger
from task.task import Task
from tests.faults.helpers import (
    DoneTasks,
    Figures,
    TaskbusProcess,
    count_from_env,
    make_tasks,
    suffix,
    until,
)
from tests.servers.nats import NatsServerFactory
from tests.servers.tansu import Tansu

pytestmark = [pytest.mark.faults, pytest.mark.slow]


class Taskmaster:
    """Sends tasks one by one and, like any taskmaster, tries again when the bus refuses one.
    ``acknowledged`` holds the ids the bus confirmed: those must never be lost."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.acknowledged: list[str] = []
        self.refused = 0

    async def send(self, tasks: list[Task], pause: float = 0.0) -> None:
        for task in tasks:
            while True:
                try:
                    await self.producer.send(self.topic, task.to_json())
                    break
                except BusError:
                    self.refused += 1
                    await asyncio.sleep(0.2)
            self.acknowledged.append(task.id)
            if pause:
                await asyncio.sleep(pause)


@pytest.mark.jetstream
@pytest.mark.timeout(180)
async def test_jetstream_restart_loses_nothing_acknowledged(
    request: pytest.FixtureRequest, tmp_path: Path, nats_servers: NatsServerFactory
) -> None:
    server = nats_servers(jetstream=True)
    url = f"jetstream://{server.hostport}?ack_wait=3s&max_deliver=-1&reconnect_wait=200ms"
    n = count_from_env("TASK_FAULT_TASKS", 1000)
    task_type = f"restart-{suffix()}"
    done_topic = f"{task_type}-done"
    tasks = make_tasks(task_type, n, "sleep=2ms")
    worker = TaskbusProcess(["worker", "nop", "--bus", url, "--type", task_type, "--done-topic", done_topic,
                             "--max-in-progress", "20"], tmp_path / "worker.log")
    try:
        async with DoneTasks(url, done_topic) as done, open_producer(url) as producer:
            master = Taskmaster(producer, task_type)
            # Given a taskmaster sending over a few seconds and a worker doing the tasks
            sending = asyncio.create_task(master.send(tasks, pause=4.0 / n))
            await until(lambda: len(done.counts) >= n // 4, "a quarter of the tasks done", timeout=60)
            # When the server stops and starts again on its port and storage
            await asyncio.to_thread(server.restart)
            await sending
            # Then every acknowledged task is done
            await until(lambda: done.covers(master.acknowledged), "every acknowledged task done", timeout=90)
            await done.settle(quiet=0.5)
            assert worker.running, worker.output()
            worker.terminate()
            assert await worker.wait() == 0, worker.output()
    finally:
        await worker.close()
    figures = Figures.of(request.node.name, "jetstream", master.acknowledged, done.counts,
                         restarts=1, sends_refused=master.refused).record()
    assert len(master.acknowledged) == n
    assert figures.lost == 0


@pytest.mark.kafka
@pytest.mark.timeout(240)
async def test_tansu_restart_forgets_and_recover_restores_from_the_ledger(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    broker = Tansu()
    broker.start()
    url = broker.url + "&partitions=2&session_timeout=3s&drain_timeout=2s&commit_interval=200ms"
    n = count_from_env("TASK_FAULT_TASKS", 300)
    # Tansu hands a consumer every record it has in one fetch, so a backlog a running worker
    # has seen lives on in that worker: the backlog the restart forgets is one of a task type
    # whose workers are not running yet (scaled to zero, or still starting)
    live, idle = f"live-{suffix()}", f"idle-{suffix()}"
    db = tmp_path / "ledger.db"
    ledger_url = f"sqlite:{db}"
    out = tmp_path  # the bus directory must exist for a reader
    before, after = make_tasks(live, n // 3, "sleep=1ms"), make_tasks(live, n // 3, "sleep=1ms", prefix="after")
    backlog = make_tasks(idle, n, "sleep=1ms", prefix="idle")
    ids = [t.id for t in before + after + backlog]
    async with SqliteLedger(str(db)) as ledger:
        for task in before + after + backlog:  # the taskmaster records each task before it sends it
            await ledger.created(task)

    def worker(task_type: str) -> TaskbusProcess:
        return TaskbusProcess(["worker", "nop", "--bus", url, "--out-bus", f"file:{out}/", "--type", task_type,
                               "--done-topic", "done", "--max-in-progress", "10", "--ledger", ledger_url],
                              tmp_path / f"worker-{task_type}.log")

    workers = [worker(live)]
    rounds = failed_passes = 0
    try:
        async with DoneTasks(f"file:{out}/?follow=1&poll=20ms", "done") as done, open_producer(url) as producer:
            live_master, idle_master = Taskmaster(producer, live), Taskmaster(producer, idle)
            # Given a worker at work on one type and a backlog of another type on Tansu
            await live_master.send(before)
            await idle_master.send(backlog)
            await until(lambda: done.covers(t.id for t in before), "the first tasks done", timeout=90)
            # When Tansu restarts and forgets every topic, message and offset
            await asyncio.to_thread(broker.restart)
            # Then the taskmaster reconnects and sends more. The running worker reconnects too,
            # but its group's position is past the new, empty log's start: it skips as many new
            # messages as it had read before (Kafka's way after a broker lost its data)
            await live_master.send(after)
            await done.settle(quiet=2.0)
            after_done_alone = sum(t.id in done.counts for t in after)
            # And recover restores from the ledger every task the broker forgot or skipped
            workers.append(worker(idle))
            while not done.covers(ids) and rounds < 15:
                rounds += 1
                await asyncio.sleep(1.2)  # records idle for --older-than
                recover = TaskbusProcess(
                    ["recover", "--once", "--ledger", ledger_url, "--bus", url, "--older-than", "1",
                     # the restarted broker forgot what it held: tasks only sent are lost too
                     "--created-older-than", "1", "--max-attempts", "30", "--log-level", "info"],
                    tmp_path / "recover.log")
                # status 1 is a pass that met a send error right after the restart: the next retries
                failed_passes += await recover.wait() != 0
                await done.settle(quiet=1.0, timeout=20)
            await until(lambda: done.covers(ids), "every task done after recover", timeout=30)
            for process in workers:
                assert process.running, process.output()
                process.terminate()
                assert await process.wait() == 0, process.output()
    finally:
        for process in workers:
            await process.close()
        broker.stop()
    resent = len(re.findall(r"\bresent to .* \(attempt", (tmp_path / "recover.log").read_text()))
    figures = Figures.of(request.node.name, "kafka (Tansu)", ids, done.counts, restarts=1,
                         forgotten_backlog=len(backlog), after_restart_done_without_recover=after_done_alone,
                         resent_by_recover=resent, recover_rounds=rounds,
                         recover_failed_passes=failed_passes).record()
    assert figures.lost == 0
    assert resent >= len(backlog)
    async with SqliteLedger(str(db)) as ledger:
        for task_type in (live, idle):
            assert [r.task.id async for r in ledger.outstanding(task_type, 0)] == []
