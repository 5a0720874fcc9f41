"""Buses: how tasks travel. Pick one by URL with ``open_consumer`` / ``open_producer``."""

from __future__ import annotations

from task.bus.base import BusInfo, BusPart, Consumer, Message, Producer
from task.bus.registry import open_consumer, open_producer
from task.credentials import Credentials

__all__ = [
    "BusInfo",
    "BusPart",
    "Consumer",
    "Credentials",
    "Message",
    "Producer",
    "open_consumer",
    "open_producer",
]
