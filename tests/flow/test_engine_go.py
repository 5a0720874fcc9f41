"""Go compatibility: a workflow file written the way Go's flowlord documents them
(tests/flow/data/go_style.toml) schedules the tasks Go's would, with Go's info and meta
(``Cronjob`` for a plain cron phase, ``Batch.Range`` for ``for``/``by`` and ``meta`` batches)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from task.bus.memory import MemoryBroker
from task.ledger.memory import MemoryLedger
from tests.flow.flow_harness import TestClock, bodies, deliver, finish, memory_app

GO_STYLE = Path(__file__).parent / "data" / "go_style.toml"
MIDNIGHT = datetime(2024, 1, 31, tzinfo=UTC)


async def test_the_go_style_workflow_schedules_what_go_would(tmp_path: Path) -> None:
    # Given the Go-style workflow, from midnight to 07:00 in five-minute steps
    (tmp_path / "wf").mkdir()
    shutil.copy(GO_STYLE, tmp_path / "wf" / "go_style.toml")
    broker, clock = MemoryBroker(), TestClock(MIDNIGHT)
    async with memory_app(broker, tmp_path / "wf", clock, ledger=MemoryLedger()) as app:
        assert app.workflows.problems == []
        while clock.now() < MIDNIGHT + timedelta(hours=7):
            clock.advance(300)
            await app.tick()
        # Then the hourly ingest (6 fields, at :05) is Go's Cronjob: info for the hour before
        ingest = bodies(broker, "ingest")
        assert [t.info for t in ingest][:2] == [
            "gs://raw/2024/01/30/23/?hour=2024-01-30T23", "gs://raw/2024/01/31/00/?hour=2024-01-31T00"]
        assert ingest[5].meta == "workflow=go_style.toml&cron=2024-01-31T04&job=hourly"
        assert len(ingest) == 7
        # The daily rollup at 03:00 (offset -24h, for=-48h, by=day): three days, newest first
        rollup = bodies(broker, "rollup")
        assert [t.info for t in rollup] == ["?day=2024-01-30", "?day=2024-01-29", "?day=2024-01-28"]
        assert rollup[0].meta == "cron=2024-01-30T03&job=daily&workflow=go_style.toml"
        # The export at 06:30: one task per meta position, the hour cut as Go does
        export = bodies(broker, "export")
        assert [t.info for t in export] == ["gs://us/export/2024-01-31?region=us",
                                            "gs://eu/export/2024-01-31?region=eu"]
        assert export[0].meta == "bucket=gs://us&cron=2024-01-31T06&region=us&workflow=go_style.toml"
        # When an ingest completes with a file, its child transform keeps its id and cron
        parent = ingest[5]
        await deliver(app, broker, finish(parent, "complete", clock.now(), file="gs://raw/x.json"))
        [transform] = bodies(broker, "transform")
        assert (transform.id, transform.info) == (parent.id, "gs://raw/x.json?hour=2024-01-31T04")
        assert transform.meta == "workflow=go_style.toml&cron=2024-01-31T04"
