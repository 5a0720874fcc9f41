"""Priorities and broadcast tasks on the buses that need no server: memory and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.modes_contract import ModesContract


class TestModesOnMemory(ModesContract):
    @pytest.fixture(autouse=True)
    def _url(self) -> None:
        self.url = f"memory:{self.type}"


class TestModesOnFile(ModesContract):
    shares_topic = False

    @pytest.fixture(autouse=True)
    def _url(self, tmp_path: Path) -> None:
        self.url = f"file:{tmp_path}/?follow=1"
