"""``taskbus peek TOPIC``: the next tasks of a topic, without consuming them.

Where the bus allows it (file, JetStream, Kafka): see ``task.inspect``. NSQ cannot show a
message without delivering it and core NATS keeps none: both are one clear line, exit 2.
The text output is one line per task (id, type, age, info); ``--json`` prints the tasks
themselves, and a body that is not a task as ``{"not_a_task": "<its text>"}``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import Field

from task.apps.inspecting import age_text, cli_inspector, table
from task.errors import ConfigError, InvalidTaskError
from task.inspect.age import created_age
from task.inspect.base import CannotInspect, Inspector
from task.settings import AppSettings, BusSettings, positional
from task.task import Task

__all__ = ["PeekApp", "PeekSettings", "describe"]

#: characters of ``info`` (or of a body that is not a task) shown in the table
SHORT = 60


class PeekSettings(BusSettings):
    """``taskbus peek``: the next tasks of a topic, without consuming them."""

    topic: str = positional("", description="the topic to look into")
    count: int = Field(10, ge=1, description="how many tasks to show",
                       json_schema_extra={"flag": "--count", "short": "-n"})
    channel: str = Field("", description="whose next tasks (file reader, Kafka group, JetStream "
                                         "consumer; default: the topic, as a worker's channel)")
    json_output: bool = Field(False, description="print JSON instead of a table",
                              json_schema_extra={"short": "--json"})


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def describe(body: bytes, now: datetime) -> tuple[str, str, str, str]:
    """``(id, type, age, info)`` of a body for the table; not a task: ``-``, ``(not a task)``."""
    try:
        task = Task.from_json(body)
    except InvalidTaskError:
        return "-", "(not a task)", "-", _short(body.decode("utf-8", "replace"))
    return task.id or "-", task.type, age_text(created_age(body, now)), _short(task.info)


def _as_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return {"not_a_task": body.decode("utf-8", "replace")}


class PeekApp:
    """Prints the next tasks once and returns; the app closes the inspector it is given."""

    Settings: ClassVar[type[AppSettings]] = PeekSettings

    def __init__(self, *, inspector: Inspector, topic: str, count: int = 10, channel: str = "",
                 as_json: bool = False, now: datetime | None = None) -> None:
        if not topic:
            raise ConfigError("taskbus peek needs a topic: taskbus peek TOPIC --bus URL")
        self.inspector = inspector
        self.topic = topic
        self.count = count
        self.channel = channel
        self.as_json = as_json
        self.now = now

    @classmethod
    def from_settings(cls, settings: AppSettings) -> PeekApp:
        """Build the app; no I/O.

        Raises:
            ConfigError: no topic, the memory bus (in-process only), a bad bus URL.
        """
        assert isinstance(settings, PeekSettings)
        if not settings.topic:
            raise ConfigError("taskbus peek needs a topic: taskbus peek TOPIC --bus URL")
        return cls(inspector=cli_inspector("peek", settings.bus, settings.credentials()),
                   topic=settings.topic, count=settings.count, channel=settings.channel,
                   as_json=settings.json_output)

    async def run(self) -> int:
        """Print the tasks; 0.

        Raises:
            ConfigError: the bus cannot show messages without consuming them (NSQ, core NATS).
            BusError: the bus cannot be reached.
        """
        try:
            try:
                bodies = await self.inspector.peek(self.topic, self.count, self.channel or None)
            except CannotInspect as err:
                raise ConfigError(f"taskbus peek: {err.reason}") from err
        finally:
            await self.inspector.close()
        if self.as_json:
            print(json.dumps([_as_json(b) for b in bodies], ensure_ascii=False, indent=1))
        elif not bodies:
            print(f"nothing waits on {self.topic!r}" + (f" for {self.channel!r}" if self.channel else ""))
        else:
            now = self.now or datetime.now(UTC)
            rows = [(i, *describe(b, now)) for i, b in enumerate(bodies, 1)]
            print(table(("#", "ID", "TYPE", "AGE", "INFO"), rows))
        return 0

    async def stop(self) -> None:
        """Nothing runs for long."""
