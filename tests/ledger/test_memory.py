"""The memory ledger: the contract, plus its test-harness parts (faults, named ledgers)."""

from __future__ import annotations

import pytest

from task.errors import LedgerError
from task.ledger.memory import LedgerFault, MemoryLedger
from task.ledger.registry import open_ledger
from task.task import Task
from tests.ledger.contract import Clock, LedgerContract


class TestMemoryLedger(LedgerContract):
    def make_ledger(self, clock: Clock) -> MemoryLedger:
        return MemoryLedger(clock=clock)


async def test_injected_fault_fails_the_next_operations_only() -> None:
    ledger = MemoryLedger()
    ledger.inject(LedgerFault.UNAVAILABLE, times=2)
    task = Task.new("t", "x")
    for _ in range(2):
        with pytest.raises(LedgerError, match="unavailable"):
            await ledger.created(task)
    assert await ledger.created(task) is True


async def test_named_url_shares_one_ledger_and_plain_url_does_not() -> None:
    first, second = open_ledger("memory:shared-test"), open_ledger("memory:shared-test")
    assert first is second
    assert open_ledger("memory:") is not open_ledger("memory:")
    await first.close()
    with pytest.raises(LedgerError, match="closed"):
        await first.find("t", "x")
    assert open_ledger("memory:shared-test") is not first
