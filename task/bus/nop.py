"""``nop:``: a bus that yields nothing and discards everything; for dry runs and benchmarks."""

from __future__ import annotations

from task.bus.base import BusInfo, BusPart, Message
from task.credentials import Credentials
from task.url import parse_url

__all__ = ["NopConsumer", "NopProducer"]


class NopConsumer(BusPart):
    """Has no messages: ``msg()`` returns None at once (the bus is finished)."""

    async def msg(self) -> Message | None:
        return None

    def info(self) -> BusInfo:
        return {"bus": "nop"}


class NopProducer(BusPart):
    """Accepts and discards every message, counting them."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, body: bytes, *, key: str | None = None) -> None:
        self.sent += 1

    def info(self) -> BusInfo:
        return {"bus": "nop", "sent": self.sent}


def open_consumer(
    url: str, *, topic: str, channel: str, prefetch: int, credentials: Credentials
) -> NopConsumer:
    parse_url(url).check_options(())
    return NopConsumer()


def open_producer(url: str, *, credentials: Credentials) -> NopProducer:
    parse_url(url).check_options(())
    return NopProducer()
