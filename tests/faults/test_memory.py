"""A worker's memory does not grow with the backlog (the CI size of ``task.bench.memory``).

The same worker runs over a small and a ten-times larger backlog of 2 KB tasks on the file bus
and on JetStream; its peak RSS (the kernel's ``ru_maxrss``) must not follow the backlog. A
worker that read ahead without bound would hold tens of MiB more for the large one, far above
the margin; two runs of a flat worker differ by a few MiB at most. No timing is asserted.
``TASK_MEMORY_TASKS`` sets the large backlog (the by-hand run is 1,000,000, see
``python -m task.bench.memory``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from task.bench.memory import MemoryRun, measure
from tests.faults.helpers import Figures, count_from_env
from tests.servers.nats import NatsServer

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASK_BYTES = 2000
IN_PROGRESS = 50
#: the growth allowed between the two peaks; a 20,000-task backlog held in memory is ~40 MiB
MARGIN = 12 * 2**20


async def _compare(request: pytest.FixtureRequest, tmp_path: Path, bus: str, url: str) -> None:
    big = count_from_env("TASK_MEMORY_TASKS", 20_000)
    small = max(1, big // 10)
    runs: list[MemoryRun] = []
    for n in (small, big):
        runs.append(await measure(url, n, max_in_progress=IN_PROGRESS, size=TASK_BYTES,
                                  interval=0.2, log=tmp_path / f"worker-{n}.log"))
    low, high = runs
    Figures(request.node.name, bus, big, extra={
        "backlog_small": small, "peak_rss_mb_small": low.peak_rss_mb,
        "backlog_large": big, "peak_rss_mb_large": high.peak_rss_mb,
        "backlog_mb_large": round(big * TASK_BYTES / 2**20, 1),
    }).record()
    assert low.peak_rss_bytes > 0 and high.peak_rss_bytes > 0
    assert high.peak_rss_bytes <= low.peak_rss_bytes + MARGIN, (
        f"peak RSS {low.peak_rss_mb} MiB at {small} tasks, {high.peak_rss_mb} MiB at {big}")


async def test_file_bus(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    await _compare(request, tmp_path, "file", f"file:{tmp_path}/bus/")


@pytest.mark.jetstream
async def test_jetstream(request: pytest.FixtureRequest, tmp_path: Path, jetstream_server: NatsServer) -> None:
    await _compare(request, tmp_path, "jetstream", f"jetstream://{jetstream_server.hostport}")
