"""A simulated day (issue 14): a workflow with cron, files and dependsOn, a worker that
succeeds on the third try, a flow restart in the middle of a retry wait, two flow replicas
on one SQLite ledger — every expected task exactly once, retries surviving the restart.

The clock moves five minutes a step; after each step both replicas tick, the simulated
workers answer every task sent so far, and the replicas take turns reading the done tasks.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from task.apps.flow import FlowApp
from task.bus.memory import MemoryBroker
from task.flow.store import open_store
from task.ledger.base import ScheduleReader
from task.ledger.registry import open_ledger
from task.task import Task
from tests.flow.flow_harness import TestClock, deliver, finish, memory_app, write_workflows

MIDNIGHT = datetime(2024, 3, 1, tzinfo=UTC)
DAY = """
[[phase]]
task = "extract:raw"
rule = "cron=0 */6 * * *"
retry = 3
template = "s3://raw/{yyyy}/{mm}/{dd}/{hh}.json"

[[phase]]
task = "transform"
dependsOn = "extract:raw"
rule = "retry_delay=10m"
retry = 3
template = "?hour={yyyy}-{mm}-{dd}T{hh}"

[[phase]]
task = "publish"
dependsOn = "transform"
template = "?day={yyyy}-{mm}-{dd}"

[[phase]]
task = "ingest"
rule = "files=s3://drop/*.csv"
template = "{meta:file}"
"""
WORKER_TOPICS = ("extract", "transform", "publish", "ingest")
#: when a file lands in the drop bucket
FILES = {timedelta(hours=2): "s3://drop/a.csv", timedelta(hours=9, minutes=5): "s3://drop/b.csv",
         timedelta(hours=21): "s3://drop/c.csv"}


def answer(task: Task, at: datetime) -> Task:
    """The workers: transform fails twice per task then succeeds; the others succeed."""
    if task.type == "transform" and int(task.get_meta("retry") or 0) < 2:
        return finish(task, "error", at, "upstream not ready")
    return finish(task, "complete", at)


async def test_a_simulated_day_sends_every_task_exactly_once(tmp_path: Path) -> None:
    broker, clock, db = MemoryBroker(), TestClock(MIDNIGHT - timedelta(minutes=5)), tmp_path / "flow.db"
    workflows = write_workflows(tmp_path / "wf", DAY, "day.toml")

    def replica(owner: str) -> FlowApp:
        url = f"sqlite:{db}"
        return memory_app(broker, workflows, clock, ledger=open_ledger(url), store=open_store(url),
                          owner=owner, task_ttl=4 * 3600)

    replicas = [replica("a"), replica("b")]
    for app in replicas:
        await app.__aenter__()
    read = dict.fromkeys(WORKER_TOPICS, 0)
    restarted = False
    try:
        step = 0
        while clock.now() < MIDNIGHT + timedelta(hours=23, minutes=55):
            clock.advance(300)
            step += 1
            if (path := FILES.get(clock.now() - MIDNIGHT)) is not None:
                broker.publish("files", json.dumps({"path": path, "size": 1}).encode())
                app = replicas[step % 2]
                assert app.files_consumer is not None
                message = await app.files_consumer.msg()
                assert message is not None
                await app.handle_file(message)
            # Given a retry waiting at 12:00 (transform of the 12:00 extract), restart replica b
            if not restarted and clock.now() >= MIDNIGHT + timedelta(hours=12, minutes=10):
                ledger = replicas[1].ledger
                assert isinstance(ledger, ScheduleReader)
                assert [e.task.get_meta("retry") for e in await ledger.scheduled("transform", 10)] == ["1"]
                await replicas[1].__aexit__(None, None, None)
                replicas[1] = replica("b2")
                await replicas[1].__aenter__()
                restarted = True
            for app in replicas:
                await app.tick()
            done = []
            for topic in WORKER_TOPICS:
                sent = broker.bodies(topic)
                done.extend(answer(Task.from_json(b), clock.now()) for b in sent[read[topic]:])
                read[topic] = len(sent)
            for n, task in enumerate(done):
                await deliver(replicas[(step + n) % 2], broker, task)
    finally:
        for app in replicas:
            await app.__aexit__(None, None, None)

    # Then: 4 extracts, each transform sent 3 times (2 retries), 4 publishes, 3 ingests
    sent = {topic: [Task.from_json(b) for b in broker.bodies(topic)] for topic in WORKER_TOPICS}
    assert [t.info for t in sent["extract"]] == [
        f"s3://raw/2024/03/01/{h:02d}.json" for h in (0, 6, 12, 18)]
    extract_ids = [t.id for t in sent["extract"]]
    assert Counter((t.id, t.get_meta("retry")) for t in sent["transform"]) == {
        (id, retry): 1 for id in extract_ids for retry in ("", "1", "2")}
    assert sorted(t.id for t in sent["publish"]) == sorted(extract_ids)
    assert [t.info for t in sent["ingest"]] == ["s3://drop/a.csv", "s3://drop/b.csv", "s3://drop/c.csv"]
    assert broker.bodies("flow-failed") == []
    assert broker.bodies("flow-alerts") == []
    assert restarted

