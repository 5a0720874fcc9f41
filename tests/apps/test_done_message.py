"""What retry and flow do with a done-topic message that is no task (``read_done``, shared by
both): count it, log one line naming the app, acknowledge it, and go on with the next."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task.bus.memory import MemoryBroker
from task.ledger.memory import MemoryLedger
from task.task import Task
from tests.flow.flow_harness import TestClock, bodies, deliver, finish, memory_app, write_workflows

FIVE = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


async def test_flow_acks_and_counts_a_message_that_is_no_task_then_handles_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given flow reading the done topic
    broker, clock = MemoryBroker(), TestClock(FIVE)
    async with memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger()) as app:
        # When junk and a key spelt TYPE arrive, then a completed load
        for junk in (b"not json", b'{"TYPE":"load"}'):
            broker.publish("done", junk)
            message = await app.consumer.msg()
            assert message is not None
            with caplog.at_level(logging.WARNING, logger="task.apps.flow"):
                await app.handle_done(message)
        load = Task.new("load", "x", id="l-1", job="hourly", meta="workflow=etl.toml&job=hourly")
        await deliver(app, broker, finish(load, "complete", clock.now(), rows="1"))
        # Then the junk is counted and acknowledged (nothing comes back), each logged once by
        # flow's own logger, and the load's child starts as usual
        assert (app.counts["consumed"], app.counts["invalid"], app.counts["nacked"]) == (3, 2, 0)
        assert broker.pending("done") == 0
        lines = [r for r in caplog.records if r.message.startswith("not a task on the done topic")]
        assert [r.name for r in lines] == ["task.apps.flow", "task.apps.flow"]
        assert [t.id for t in bodies(broker, "report")] == ["l-1"]
