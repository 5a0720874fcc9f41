"""Picking a bus by URL: clear errors for unknown schemes, bad URLs and missing extras."""

from __future__ import annotations

import subprocess
import sys

import pytest

from task.bus.nop import NopConsumer, NopProducer
from task.bus.registry import open_consumer, open_producer
from task.errors import ConfigError, MissingExtraError, UnknownBackendError


def test_an_unknown_scheme_names_the_valid_ones() -> None:
    with pytest.raises(UnknownBackendError, match="valid buses: file, jetstream, kafka"):
        open_producer("rabbit://h:1")


def test_a_url_without_a_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="has no scheme"):
        open_producer("localhost")


def test_a_consumer_needs_a_topic() -> None:
    with pytest.raises(ConfigError, match="needs a topic"):
        open_consumer("memory:", topic="")


def test_a_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiokafka", None)  # as if taskbus[kafka] were not installed
    monkeypatch.delitem(sys.modules, "task.bus.kafka", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'taskbus\[kafka\]'"):
        open_producer("kafka://127.0.0.1:9092")


def test_import_task_and_help_need_no_extras() -> None:
    code = (
        "import sys\n"
        "for name in ('nats', 'aiokafka', 'cassandra', 'croniter', 'watchfiles', 'aiohttp', 'prometheus_client'):\n"
        "    sys.modules[name] = None\n"
        "import task, task.bus, task.ledger, task.cli\n"
        "sys.argv = ['taskbus', '--help']\n"
        "task.cli.main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "worker" in out.stdout


async def test_the_nop_bus_yields_nothing_and_discards_everything() -> None:
    consumer, producer = open_consumer("nop:", topic="t"), open_producer("nop:")
    assert isinstance(consumer, NopConsumer) and isinstance(producer, NopProducer)
    assert await consumer.msg() is None
    await producer.send("t", b"x")
    assert producer.info()["sent"] == 1
