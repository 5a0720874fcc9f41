"""Print every fault test's figures (tasks, kills, duplicates, lost, RSS) after the run, so
the CI log carries them without ``-s``."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from tests.faults.helpers import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault figures")
    for figures in FIGURES:
        terminalreporter.write_line(json.dumps(asdict(figures)))
