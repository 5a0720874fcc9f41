"""The outstanding-task ledger. Pick a backend by URL with ``open_ledger``."""

from __future__ import annotations

from task.ledger.base import Ledger, LedgerRecord, State, TaskListStats
from task.ledger.registry import open_ledger

__all__ = ["Ledger", "LedgerRecord", "State", "TaskListStats", "open_ledger"]
