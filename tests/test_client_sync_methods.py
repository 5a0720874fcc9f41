"""``Client.sync``'s blocking methods are Client's own (one typed wrapper makes them): same
parameters, same results; here the ones the bus contract does not run (cancel, a delay)."""

from __future__ import annotations

import inspect
import uuid
from datetime import timedelta

import pytest

from task import Client
from task.bus.memory import MemoryBroker
from task.delayed import CancelOutcome
from task.errors import ConfigError
from task.ledger.memory import MemoryLedger


def test_sync_send_with_a_delay_and_cancel_block_and_return_what_the_client_returns() -> None:
    url = "memory:sync-" + uuid.uuid4().hex[:8]
    with Client.sync(url, ledger=MemoryLedger()) as client:
        sent = client.send("echo", "later", delay=timedelta(minutes=15))
        assert sent.get_meta("run_at")
        assert MemoryBroker.named(url[len("memory:"):]).bodies("echo") == []  # held, not sent
        cancelled = client.cancel(sent.id)
        again = client.cancel(sent.id)
    assert cancelled.outcome is CancelOutcome.CANCELLED and cancelled.id == sent.id
    assert again.outcome is CancelOutcome.UNKNOWN


def test_sync_methods_show_the_client_parameters_and_refuse_use_before_open() -> None:
    client = Client.sync("memory:sync-" + uuid.uuid4().hex[:8])
    for name in ("send", "wait", "wait_all", "cancel"):
        ours = list(inspect.signature(getattr(client, name)).parameters)
        theirs = list(inspect.signature(getattr(client.client, name)).parameters)
        assert ours == theirs, name
    with pytest.raises(ConfigError, match="not open"):
        client.send("echo", "now")
