"""Core NATS keeps nothing: the inspector says so instead of pretending."""

from __future__ import annotations

import pytest

from task.errors import ConfigError
from task.inspect import CannotInspect, CannotPeek, open_inspector
from tests.servers.nats import NatsServer

pytestmark = pytest.mark.nats


async def test_core_nats_has_no_backlog_and_says_why(nats_server: NatsServer) -> None:
    inspector = open_inspector(f"nats://{nats_server.hostport}")
    stats = await inspector.backlog("nop", "workers")
    assert stats.waiting == 0 and "keeps no messages" in stats.notes[0]
    with pytest.raises(CannotInspect, match="jetstream://"):
        await inspector.topics()
    with pytest.raises(CannotPeek, match="keeps no messages"):
        await inspector.peek("nop", 3)
    await inspector.close()


def test_a_bad_url_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pending_limt"):
        open_inspector("nats://127.0.0.1:4222?pending_limt=3")


def test_an_unknown_scheme_names_the_buses_that_can_be_inspected() -> None:
    with pytest.raises(ConfigError, match="jetstream, kafka"):
        open_inspector("nop://")
