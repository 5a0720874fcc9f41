"""The files app on real files in tmp_path with the real watcher (events, and polling).

Time is injected: a file settles when the test moves the app's monotonic clock, a cron
window closes when it moves the wall clock, and the test waits for the app's next ticks
(a look at the files) instead of sleeping through windows.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task.apps.cron import CronRule
from task.apps.files import FileRule, FilesApp, FilesSettings
from task.apps.schedule import CronSchedule, zone
from task.bus.memory import Fault, MemoryBroker, MemoryProducer
from task.errors import ConfigError
from task.ledger.memory import MemoryLedger
from task.settings import load_settings
from task.task import Task
from tests.apps.status import get_stats
from tests.servers.ports import free_port

#: settle time, in seconds of the injected clock; small, so the watcher ticks often
SETTLE = 0.1
WALL = datetime(2024, 1, 31, 5, 1, tzinfo=UTC)


class Clocks:
    """The app's monotonic clock (settling) and wall clock (cron windows), moved by the test,
    and a count of the app's ticks so the test can wait for the app to look again."""

    def __init__(self, app: FilesApp) -> None:
        self.monotonic = 1000.0
        self.wall = WALL
        self.ticks = 0
        app.clock = lambda: self.monotonic
        app.now = lambda: self.wall
        tick = app.tick

        async def counted() -> None:
            await tick()
            self.ticks += 1

        app.tick = counted  # type: ignore[method-assign]

    async def next_ticks(self, n: int = 2) -> None:
        """Wait until ``n`` more ticks have run: at least one saw everything done before."""
        target = self.ticks + n
        await until(lambda: self.ticks >= target)

    async def settle(self) -> None:
        """Let every file seen so far settle: move the clock past the settle time."""
        self.monotonic += SETTLE
        await self.next_ticks()


def rule(folder: Path, **values: object) -> FileRule:
    return FileRule.model_validate({"dir": str(folder), "pattern": "*.csv", "type": "load"} | values)


def make_app(broker: MemoryBroker, *rules: FileRule, **options: object) -> tuple[FilesApp, Clocks]:
    app = FilesApp(producer=MemoryProducer(broker), rules=rules, settle=SETTLE, **options)  # type: ignore[arg-type]
    return app, Clocks(app)


@asynccontextmanager
async def running(app: FilesApp) -> AsyncIterator[FilesApp]:
    """The app running in the background, watching, stopped and awaited on exit."""
    task = asyncio.create_task(app.run())
    await asyncio.wait_for(app.watching.wait(), 10)
    try:
        yield app
    finally:
        await app.stop()
        await asyncio.wait_for(task, 10)


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait for something the app does as soon as it can (not for time to pass)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def tasks(broker: MemoryBroker, topic: str = "load") -> list[Task]:
    return [Task.from_json(body) for body in broker.bodies(topic)]


def settling(app: FilesApp) -> object:
    return app.stats()["settling"]


async def test_a_file_written_slowly_makes_one_task_once_complete(tmp_path: Path) -> None:
    # Given the app watching a directory for *.csv
    broker = MemoryBroker()
    app, clocks = make_app(broker, rule(tmp_path))
    async with running(app):
        # When a file is written in chunks, each half the settle time after the last
        path = tmp_path / "big.csv"
        with path.open("wb") as out:
            out.write(b"x" * 1000)
            out.flush()
            await until(lambda: settling(app) == 1)
            for _ in range(7):
                out.write(b"x" * 1000)
                out.flush()
                clocks.monotonic += SETTLE / 2
                await clocks.next_ticks()
                # Then no task is made while it is still being written
                assert broker.bodies("load") == []
        # And exactly one task comes once it has not changed for the settle time
        await clocks.settle()
        await until(lambda: len(broker.bodies("load")) == 1)
        await clocks.settle()
    [task] = tasks(broker)
    assert task.info == str(path) and task.type == "load" and task.id
    assert path.stat().st_size == 8000
    assert app.counts["files"] == 1


async def test_patterns_subdirectories_and_time_templates(tmp_path: Path) -> None:
    broker = MemoryBroker()
    info = "{path}?day={yyyy}-{mm}-{dd}&hour={hh}&name={name}"
    app, clocks = make_app(broker, rule(tmp_path, info=info, topic="in"), polling=True,
                           poll_interval=0.05)
    async with running(app):
        (tmp_path / "notes.txt").write_text("not a csv")
        hour = tmp_path / "2024" / "01" / "31" / "05"
        hour.mkdir(parents=True)
        (hour / "a.csv").write_text("1")
        await until(lambda: settling(app) == 1)  # the .txt was seen no later
        await clocks.settle()
        await until(lambda: len(broker.bodies("in")) == 1)
    [task] = tasks(broker, "in")
    assert task.info == f"{hour / 'a.csv'}?day=2024-01-31&hour=05&name=a.csv"
    assert broker.sent == [("in", task.to_json())]  # the .txt made nothing


async def test_the_file_time_is_its_modification_time_when_the_path_names_none(tmp_path: Path) -> None:
    broker = MemoryBroker()
    path = tmp_path / "old.csv"
    path.write_text("1")
    stamp = datetime(2023, 7, 4, 12, 30, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    app, clocks = make_app(broker, rule(tmp_path, info="{ts} {dir}"), existing=True)
    async with running(app):
        await clocks.settle()
        await until(lambda: len(broker.bodies("load")) == 1)
    assert tasks(broker)[0].info == f"20230704T123000 {tmp_path}"


async def test_groups_of_n_files_and_the_partial_group_on_shutdown(tmp_path: Path) -> None:
    broker = MemoryBroker()
    app, clocks = make_app(broker, rule(tmp_path, group=2))
    async with running(app):
        for name in ("b.csv", "a.csv", "c.csv"):
            (tmp_path / name).write_text(name)
        await until(lambda: settling(app) == 3)
        await clocks.settle()
        await until(lambda: len(broker.bodies("load")) == 1 and app.stats()["grouped"] == 1)
    infos = [t.info.split(",") for t in tasks(broker)]
    assert len(infos) == 2 and sorted(infos[0] + infos[1]) == [str(tmp_path / n) for n in ("a.csv", "b.csv", "c.csv")]
    assert len(infos[0]) == 2 and infos[0] == sorted(infos[0])


async def test_a_cron_window_groups_what_settled_in_it(tmp_path: Path) -> None:
    # Given a rule grouping files per quarter hour, and a wall clock at 05:01
    broker = MemoryBroker()
    app, clocks = make_app(broker, rule(tmp_path, group_cron="*/15 * * * *", info="{dir}"))
    async with running(app):
        # When two files settle inside the window
        (tmp_path / "a.csv").write_text("a")
        (tmp_path / "b.csv").write_text("b")
        await until(lambda: settling(app) == 2)
        await clocks.settle()
        await until(lambda: app.stats()["grouped"] == 2)
        assert broker.bodies("load") == []
        # Then nothing goes out before the window closes at 05:15
        clocks.wall += timedelta(minutes=13)  # 05:14
        await clocks.next_ticks()
        assert broker.bodies("load") == []
        # And one task pointing at their directory comes when it does
        clocks.wall += timedelta(minutes=1)  # 05:15
        await until(lambda: len(broker.bodies("load")) == 1)
    assert [t.info for t in tasks(broker)] == [str(tmp_path)]


async def test_a_six_field_group_cron_means_what_it_means_to_cron(tmp_path: Path) -> None:
    # Given a window of Go's 6-field form, seconds first: at second 30 of every quarter hour
    spec = "30 */15 * * * *"
    broker = MemoryBroker()
    app, clocks = make_app(broker, rule(tmp_path, group_cron=spec, info="{dir}"))
    # And the instant the cron app fires a rule of the same spec, from the same moment
    cron_rule = CronRule.model_validate(f"{spec} | load | x")
    fires_at = CronSchedule(cron_rule.cron, zone("UTC"), WALL).next_at
    assert fires_at == datetime(2024, 1, 31, 5, 15, 30, tzinfo=UTC)
    async with running(app):
        (tmp_path / "a.csv").write_text("a")
        await until(lambda: settling(app) == 1)
        await clocks.settle()
        await until(lambda: app.stats()["grouped"] == 1)
        # When the wall clock reaches a second before that instant, then that instant
        clocks.wall = fires_at - timedelta(seconds=1)
        await clocks.next_ticks()
        assert broker.bodies("load") == []
        clocks.wall = fires_at
        # Then the files' window closes when the cron rule fires
        await until(lambda: len(broker.bodies("load")) == 1)


async def test_created_tasks_are_recorded_and_a_refused_send_is_tried_again(tmp_path: Path) -> None:
    broker, ledger = MemoryBroker(), MemoryLedger()
    broker.inject(Fault.SEND_FAILS)
    app, clocks = make_app(broker, rule(tmp_path), ledger=ledger)
    async with running(app):
        (tmp_path / "a.csv").write_text("a")
        await until(lambda: settling(app) == 1)
        await clocks.settle()
        await until(lambda: len(broker.bodies("load")) == 1)
        [task] = tasks(broker)
        assert await ledger.find("load", task.id) is not None
    assert app.counts["send_errors"] == 1 and app.stats()["sent"] == 1


def test_rules_from_flags_and_mistakes_named(tmp_path: Path) -> None:
    settings = load_settings(FilesSettings, None, bus="memory:files-test", rule=[
        f"dir={tmp_path} pattern=*.gz type=load info='{{path}} day={{yyyy}}-{{mm}}-{{dd}}' group=10"
    ])
    [parsed] = settings.rule
    assert (parsed.pattern, parsed.info, parsed.group) == ("*.gz", "{path} day={yyyy}-{mm}-{dd}", 10)
    assert FilesApp.from_settings(settings).rules == [parsed]
    with pytest.raises(ConfigError, match="not key=value"):
        load_settings(FilesSettings, None, rule=[f"{tmp_path} type=x"])
    with pytest.raises(ConfigError, match=r"\{yyy\}"):
        load_settings(FilesSettings, None, rule=[f"dir={tmp_path} type=x info={{yyy}}"])
    with pytest.raises(ConfigError, match="cron"):
        FilesApp(producer=MemoryProducer(MemoryBroker()), rules=[rule(tmp_path, group_cron="often")])
    with pytest.raises(ConfigError, match="at least one rule"):
        FilesApp.from_settings(load_settings(FilesSettings, None, bus="memory:files-test"))


async def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    app = FilesApp(producer=MemoryProducer(MemoryBroker()), rules=[rule(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="does not exist"):
        await app.run()


async def test_status_endpoint_serves_stats(tmp_path: Path) -> None:
    broker, port = MemoryBroker(), free_port()
    app = FilesApp(producer=MemoryProducer(broker), rules=[rule(tmp_path)], status_port=port)
    async with app:
        stats = await get_stats(port)
    assert stats["app"] == "files" and stats["sent"] == 0 and stats["settling"] == 0


async def test_start_each_send_and_the_next_group_window_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the app from settings: one task per file, and one per quarter hour of files
    broker = MemoryBroker.named("files-log-test")
    settings = load_settings(FilesSettings, None, bus="memory:files-log-test", settle="100ms", rule=[
        f"dir={tmp_path} pattern=*.csv type=load",
        f"dir={tmp_path} pattern=*.gz type=pack info={{dir}} group_cron='*/15 * * * *'",
    ])
    app = FilesApp.from_settings(settings)
    clocks = Clocks(app)
    with caplog.at_level(logging.INFO, "task.apps.files"):
        async with running(app):
            # When a file of each kind settles, and the quarter hour ends
            (tmp_path / "a.csv").write_text("a")
            (tmp_path / "b.gz").write_text("b")
            await until(lambda: settling(app) == 2)
            await clocks.settle()
            await until(lambda: len(broker.bodies("load")) == 1 and app.stats()["grouped"] == 1)
            clocks.wall += timedelta(minutes=14)  # 05:15
            await until(lambda: len(broker.bodies("pack")) == 1)
    # Then the log says how the app runs, each send, and when the next group goes out
    [start] = [m for m in caplog.messages if m.startswith("files starting:")]
    assert start.startswith("files starting: bus=memory:files-log-test settle=100ms rules=dir=")
    [single], [group] = tasks(broker), tasks(broker, "pack")
    assert f"sent task {single.id} (load) for 1 file to 'load': {tmp_path / 'a.csv'}" in caplog.messages
    assert f"sent task {group.id} (pack) for 1 file to 'pack': {tmp_path}" in caplog.messages
    windows = [m for m in caplog.messages if "next group" in m]
    assert windows[:2] == ["rule 2 (pack): next group of files sent at 2024-01-31T05:15:00+00:00",
                           "rule 2 (pack): next group of files sent at 2024-01-31T05:30:00+00:00"]


def test_durations_take_units_and_plain_seconds(tmp_path: Path) -> None:
    settings = load_settings(FilesSettings, None, settle="2s", poll_interval="250ms",
                             rule=[f"dir={tmp_path} type=x"])
    assert (settings.settle, settings.poll_interval) == (2, 0.25)
    assert load_settings(FilesSettings, None, settle="3").settle == 3
    with pytest.raises(ConfigError, match="'soon' is not a duration"):
        load_settings(FilesSettings, None, settle="soon")
