"""Buses: how tasks travel. Pick one by URL with ``open_consumer`` / ``open_producer``."""

from __future__ import annotations

from task.bus.base import BusInfo, BusPart, Consumer, Message, Producer
from task.bus.registry import Credentials, open_consumer, open_producer

__all__ = [
    "Consumer",
    "Message",
    "Producer",
    "BusInfo",
    "BusPart",
    "Credentials",
    "open_consumer",
    "open_producer",
]
