"""The stop a signal starts is kept and awaited: its failure is logged, never lost."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from task.cli import _run_app


class FailingStop:
    """An app whose stop() fails after it has told run() to return."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def run(self) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(self.stopped.wait(), 20)
        return 0

    async def stop(self) -> None:
        self.stopped.set()
        raise RuntimeError("cannot close the connection")


async def test_a_stop_that_fails_is_logged_with_its_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "task.cli"):
        assert await _run_app(FailingStop(), None) == 0  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.getMessage() == "stopping FailingStop failed" and record.exc_info
