"""``taskbus dlq ls|show|replay``: read the dead-letter topic and send tasks back after a fix.

The dead-letter topic is the one the workers were given (the same ``dead_letter_topic``
setting, ``--topic`` here; JetStream's ``?dead_letter=``). What is still in it is what the
reader ``--channel`` (default ``taskbus-dlq``) has not acknowledged: ``ls`` lists those
envelopes without consuming them (reason, original topic, attempts, when, the start of the
body), ``show N`` prints envelope N of ``ls`` with its whole body, ``replay --all``,
``replay N...`` or ``replay --id TASK_ID`` sends the chosen bodies back to their topics and
takes each envelope off the dead-letter topic once its send is confirmed
(``task.apps.dlq_replay``), counted: ``replayed 12 of 12``.

``ls`` and ``show`` need a bus that can show messages without consuming them (file,
JetStream, Kafka). On NSQ only ``replay --all`` and ``replay --id`` work; core NATS keeps no
dead letters to read.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from task.apps.dlq_replay import Choice, ReplayReport, replay
from task.apps.inspecting import cli_inspector, table
from task.bus.base import Consumer, Producer
from task.bus.registry import open_consumer, open_producer, scheme_of
from task.errors import BusError, ConfigError
from task.inspect.base import CannotInspect, Inspector
from task.inspect.deadletters import DeadLetter, parse_dead_letter
from task.settings import AppSettings, BusSettings, positional

__all__ = ["ACTIONS", "DEFAULT_CHANNEL", "DlqApp", "DlqSettings"]

logger = logging.getLogger(__name__)

#: the reader whose position marks what is still in the dead-letter topic
DEFAULT_CHANNEL = "taskbus-dlq"
#: characters of a reason or body shown by ``ls`` (``show`` prints them whole)
SHORT = 50

ACTIONS: dict[str, str] = {
    "ls": "list the dead letters (reason, topic, attempts, received, start of the body)",
    "show": "print dead letter N of ls with its whole body: taskbus dlq show N...",
    "replay": "send bodies back to their topic: replay --all, replay N..., replay --id TASK_ID",
}


def usage() -> str:
    """What ``taskbus dlq`` alone prints."""
    width = max(map(len, ACTIONS))
    rows = "\n".join(f"  {name:<{width}}  {line}" for name, line in ACTIONS.items())
    return (f"taskbus dlq: say what to do: taskbus dlq ACTION --topic DEAD_LETTER_TOPIC --bus URL "
            f"(taskbus dlq -h for the options)\n\nactions:\n{rows}")


class DlqSettings(BusSettings):
    """``taskbus dlq``: read the dead-letter topic, replay tasks after a fix."""

    action: str = positional("", description="ls, show or replay")
    args: list[str] = positional([], description="show, replay: positions as ls numbers them")
    dead_letter_topic: str = Field(
        "", description="the dead-letter topic: the workers' dead_letter_topic (or JetStream's "
                        "?dead_letter=)", json_schema_extra={"flag": "--topic"})
    channel: str = Field(DEFAULT_CHANNEL, description="the reader of the dead-letter topic whose "
                                                      "position marks what is still in it")
    replay_all: bool = Field(False, description="replay: every dead letter",
                             json_schema_extra={"flag": "--all"})
    ids: list[str] = Field([], description="replay: dead letters whose task has this id",
                           json_schema_extra={"flag": "--id"})
    limit: int = Field(1000, ge=1, description="ls, show, replay: read at most this many dead letters")
    json_output: bool = Field(False, description="print JSON instead of a table",
                              json_schema_extra={"short": "--json"})


def _positions(args: Sequence[str]) -> list[int]:
    try:
        numbers = [int(a) for a in args]
    except ValueError:
        raise ConfigError(f"taskbus dlq: {' '.join(args)!r}: give dead letters by their number "
                          "in taskbus dlq ls (1, 2, ...)") from None
    if any(n < 1 for n in numbers):
        raise ConfigError("taskbus dlq: dead letters are numbered from 1, as taskbus dlq ls shows")
    return numbers


def check_action(action: str, args: Sequence[str], replay_all: bool, ids: Sequence[str]) -> None:
    """Raises: ConfigError: no action (lists them), an unknown one, missing or extra arguments."""
    if not action:
        raise ConfigError(usage())
    if action not in ACTIONS:
        raise ConfigError(f"unknown dlq action {action!r}; use one of: {', '.join(ACTIONS)}")
    if action == "ls" and (args or replay_all or ids):
        raise ConfigError("taskbus dlq ls takes no positions, --all or --id; it lists every dead letter")
    if action == "show" and not args:
        raise ConfigError("taskbus dlq show needs a number from taskbus dlq ls: taskbus dlq show N")
    if action == "replay" and sum((bool(args), replay_all, bool(ids))) != 1:
        raise ConfigError("taskbus dlq replay: say which, one way: --all, numbers from taskbus dlq "
                          "ls (replay 1 3), or --id TASK_ID")
    _positions(args)


def _reader_url(url: str) -> str:
    """The bus URL for the dead-letter reader. On JetStream its durable consumer must never
    give up on a message (``max_deliver=-1``): each replay gives back the one message it
    fetched past the last it needed, and after ``max_deliver`` such returns JetStream would
    stop delivering that dead letter to this reader for good."""
    if scheme_of(url) != "jetstream" or "max_deliver=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "max_deliver=-1"


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def _short(letter: DeadLetter) -> str:
    return _cut((letter.raw if letter.body is None else letter.body).decode("utf-8", "replace"))


def _letter_json(n: int, letter: DeadLetter) -> dict[str, object]:
    doc: dict[str, object] = {"n": n, "reason": letter.reason, "topic": letter.topic,
                              "attempts": letter.attempts, "received": letter.received,
                              "task_id": letter.task_id, "truncated": letter.truncated}
    doc["body"] = None if letter.body is None else letter.body.decode("utf-8", "replace")
    return doc


def _pretty_body(body: bytes | None) -> str:
    if body is None:
        return "(no body)"
    try:
        return json.dumps(json.loads(body), ensure_ascii=False, indent=2)
    except ValueError:
        return body.decode("utf-8", "replace")


class DlqApp:
    """Runs one dlq action and returns; it closes the inspector, consumer and producer."""

    Settings: ClassVar[type[AppSettings]] = DlqSettings

    def __init__(
        self,
        *,
        inspector: Inspector,
        topic: str,
        action: str,
        args: Sequence[str] = (),
        replay_all: bool = False,
        ids: Sequence[str] = (),
        channel: str = DEFAULT_CHANNEL,
        limit: int = 1000,
        as_json: bool = False,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        patience: float = 10.0,
    ) -> None:
        check_action(action, args, replay_all, ids)
        if not topic:
            raise ConfigError("taskbus dlq needs --topic: the dead-letter topic the workers were given "
                              "(their dead_letter_topic setting)")
        if action == "replay" and (consumer is None or producer is None):
            raise ConfigError("taskbus dlq replay needs a consumer and a producer")
        self.inspector = inspector
        self.topic = topic
        self.action = action
        self.positions = _positions(args)
        self.replay_all = replay_all
        self.ids = list(ids)
        self.channel = channel
        self.limit = limit
        self.as_json = as_json
        self.consumer = consumer
        self.producer = producer
        self.patience = patience

    @classmethod
    def from_settings(cls, settings: AppSettings) -> DlqApp:
        """Build the app; no I/O.

        Raises:
            ConfigError: no or an unknown action, missing arguments, no ``--topic``, the
                memory bus (in-process only), a bad bus URL.
        """
        assert isinstance(settings, DlqSettings)
        check_action(settings.action, settings.args, settings.replay_all, settings.ids)
        if not settings.dead_letter_topic:
            raise ConfigError("taskbus dlq needs --topic: the dead-letter topic the workers were given "
                              "(their dead_letter_topic setting)")
        credentials = settings.credentials()
        inspector = cli_inspector("dlq", settings.bus, credentials)
        consumer = producer = None
        if settings.action == "replay":
            consumer = open_consumer(_reader_url(settings.bus), topic=settings.dead_letter_topic,
                                     channel=settings.channel, prefetch=1, credentials=credentials)
            producer = open_producer(settings.producer_url, credentials=credentials)
        return cls(inspector=inspector, topic=settings.dead_letter_topic, action=settings.action,
                   args=settings.args, replay_all=settings.replay_all, ids=settings.ids,
                   channel=settings.channel, limit=settings.limit, as_json=settings.json_output,
                   consumer=consumer, producer=producer)

    async def run(self) -> int:
        """Do the action: 0 when done, 1 when a dead letter asked for was not there, or a
        replay did not replay everything chosen.

        Raises:
            ConfigError: the bus cannot list its dead letters (NSQ: use replay; core NATS).
            BusError: the bus cannot be reached or a send failed.
        """
        try:
            if self.action == "replay":
                return await self._replay()
            letters = await self._letters()
            return self._ls(letters) if self.action == "ls" else self._show(letters)
        finally:
            await self.inspector.close()

    async def stop(self) -> None:
        """Nothing runs for long; closing happens when ``run`` returns."""

    async def _letters(self) -> list[DeadLetter]:
        try:
            bodies = await self.inspector.peek(self.topic, self.limit, self.channel)
        except CannotInspect as err:
            hint = " (taskbus dlq replay --all or --id still works)" if self.action != "replay" else ""
            raise ConfigError(f"taskbus dlq {self.action}: {err.reason}{hint}") from err
        return [parse_dead_letter(b) for b in bodies]

    def _ls(self, letters: list[DeadLetter]) -> int:
        if self.as_json:
            print(json.dumps([_letter_json(n, x) for n, x in enumerate(letters, 1)], ensure_ascii=False, indent=1))
        elif not letters:
            print(f"no dead letters on {self.topic!r}")
        else:
            print(table(("#", "REASON", "TOPIC", "ATTEMPTS", "RECEIVED", "BODY"), [
                (n, _cut(x.reason), x.topic or "-", x.attempts, x.received or "-", _short(x))
                for n, x in enumerate(letters, 1)
            ]))
        return 0

    def _show(self, letters: list[DeadLetter]) -> int:
        status = 0
        for n in self.positions:
            if n > len(letters):
                print(f"taskbus dlq show: there is no dead letter {n}: {len(letters)} on {self.topic!r} "
                      "(taskbus dlq ls)", file=sys.stderr)
                status = 1
                continue
            letter = letters[n - 1]
            if self.as_json:
                print(json.dumps(_letter_json(n, letter), ensure_ascii=False, indent=1))
                continue
            print(f"dead letter {n} of {len(letters)} on {self.topic!r}")
            for name, value in (("reason", letter.reason), ("topic", letter.topic),
                                ("attempts", letter.attempts), ("received", letter.received),
                                ("task id", letter.task_id or "-")):
                print(f"  {name + ':':<10}{value}")
            if letter.truncated:
                print("  (the body was cut to fit the dead-letter topic)")
            print(_pretty_body(letter.body))
        return status

    async def _replay(self) -> int:
        assert self.consumer is not None and self.producer is not None
        choice, present, chosen = await self._choice()
        if chosen == 0 or present == 0:
            print(f"nothing to replay on {self.topic!r}" + (" with those ids" if self.ids else ""))
            return 0 if not self.ids else 1
        report = ReplayReport(chosen=chosen or 0)
        try:
            async with self.producer, self.consumer:
                report = await replay(self.consumer, self.producer, self.topic, present=present,
                                      chosen=chosen, choice=choice, patience=self.patience)
        except BusError as err:
            print(f"taskbus dlq replay: stopped: {err}", file=sys.stderr)
            return 1
        for line in report.refused:
            print(f"not replayed: {line}", file=sys.stderr)
        print(report.summary())
        return 0 if report.replayed == report.chosen else 1

    async def _choice(self) -> tuple[Choice, int, int | None]:
        """What to replay, how many envelopes to read at most, and how many are chosen."""
        try:
            letters: list[DeadLetter] | None = await self._letters()
        except ConfigError:
            if self.positions:
                raise  # numbers need a listing
            letters = None  # NSQ: cannot list, but can read and replay
        if letters is None:
            waiting = (await self.inspector.backlog(self.topic, self.channel)).waiting or 0
            if self.replay_all:
                return Choice(everything=True), waiting, waiting
            return Choice(ids=self.ids), waiting, None
        if self.replay_all:
            return Choice(everything=True), len(letters), len(letters)
        if self.ids:
            wanted = [x.raw for x in letters if x.task_id in set(self.ids)]
            return Choice(envelopes=wanted), len(letters), len(wanted)
        missing = [n for n in self.positions if n > len(letters)]
        if missing:
            raise ConfigError(f"taskbus dlq replay: there is no dead letter {missing[0]}: "
                              f"{len(letters)} on {self.topic!r} (taskbus dlq ls)")
        picked = [letters[n - 1].raw for n in dict.fromkeys(self.positions)]
        return Choice(envelopes=picked), len(letters), len(picked)
