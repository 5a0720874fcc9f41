"""taskbus cron: schedules over simulated days, DST, replicas, catch-up, settings."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from task.apps.cron import CronApp, CronRule, CronSettings, task_id
from task.apps.schedule import instant
from task.bus.memory import Fault, MemoryBroker, MemoryProducer
from task.errors import ConfigError
from task.ledger.memory import LedgerFault, MemoryLedger
from task.ledger.sqlite import SqliteLedger
from task.settings import load_settings
from task.task import Task
from tests.servers.ports import free_port

NY = ZoneInfo("America/New_York")


class FakeClock:
    """Simulated time: ``sleep`` jumps forward at once; at ``end`` it parks until cancelled."""

    def __init__(self, start: datetime, end: datetime, *, suspend: tuple[datetime, timedelta] | None = None) -> None:
        self.t = start
        self.end = end
        self.reached = asyncio.Event()
        #: (from when, how long): the first sleep from then on lasts that long (a suspended machine)
        self.suspend = suspend

    def now(self) -> datetime:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if self.t >= self.end:
            self.reached.set()
            await asyncio.Event().wait()
        step = timedelta(seconds=seconds)
        if self.suspend is not None and self.t >= self.suspend[0]:
            step, self.suspend = self.suspend[1], None
        self.t = min(self.t + step, self.end)
        await asyncio.sleep(0)


async def run_until_end(app: CronApp, clock: FakeClock) -> None:
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(clock.reached.wait(), 10)
    await app.stop()
    assert await runner == 0


def make_app(broker: MemoryBroker, clock: FakeClock, *rules: CronRule | str, **kw: object) -> CronApp:
    parsed = [r if isinstance(r, CronRule) else CronRule.model_validate(r) for r in rules]
    return CronApp(rules=parsed, producer=MemoryProducer(broker), clock=clock, **kw)  # type: ignore[arg-type]


def tasks(broker: MemoryBroker, topic: str) -> list[Task]:
    return [Task.from_json(b) for b in broker.bodies(topic)]


async def test_spring_forward_day_in_new_york() -> None:
    # Given hourly and 02:30 rules in New York, on the day 02:00-03:00 does not exist
    broker = MemoryBroker()
    start = datetime(2024, 3, 10, 0, 0, tzinfo=NY)
    clock = FakeClock(start, datetime(2024, 3, 11, 0, 0, tzinfo=NY))
    hourly = CronRule(cron="0 * * * *", type="hourly", info="logs/{slug}", offset="-1h")
    nightly = CronRule(cron="30 2 * * *", type="nightly", info="day={yyyy}-{mm}-{dd}T{hh}:{min}")
    app = make_app(broker, clock, hourly, nightly, timezone="America/New_York")
    # When the app runs through the whole simulated day
    await run_until_end(app, clock)
    # Then the hourly rule fired once per real hour: 23 times, 03:00 EDT once
    sent = tasks(broker, "hourly")
    assert len(sent) == 23
    hours = [t.info for t in sent]
    assert hours[:3] == ["logs/2024/03/10/00", "logs/2024/03/10/01", "logs/2024/03/10/03"]
    assert hours[-1] == "logs/2024/03/10/23"
    assert len(set(hours)) == 23
    # And the 02:30 rule, whose time never came, fired once at the end of the gap
    (night,) = tasks(broker, "nightly")
    assert night.info == "day=2024-03-10T03:00"
    assert night.created == "2024-03-10T07:00:00Z"
    # And every id is the one any replica derives for that rule and instant
    assert sent[0].id == task_id(hourly, datetime(2024, 3, 10, 6, tzinfo=UTC))
    assert sent[0].created == "2024-03-10T06:00:00Z"


async def test_fall_back_day_in_new_york() -> None:
    # Given the day 01:00-02:00 happens twice (25 real hours)
    broker = MemoryBroker()
    clock = FakeClock(datetime(2024, 11, 3, 0, 0, tzinfo=NY), datetime(2024, 11, 4, 0, 0, tzinfo=NY))
    app = make_app(broker, clock, "0 * * * * | hourly | {hh}", "30 1 * * * | nightly | {ts}",
                   timezone="America/New_York")
    # When it runs through the day
    await run_until_end(app, clock)
    # Then each wall hour fires once (01:00 at its first occurrence), 00:00 next day included
    infos = [t.info for t in tasks(broker, "hourly")]
    assert infos == [f"{h:02d}" for h in range(1, 24)] + ["00"]
    (night,) = tasks(broker, "nightly")
    assert (night.info, night.created) == ("20241103T013000", "2024-11-03T05:30:00Z")


def test_instant_maps_gap_and_overlap() -> None:
    assert instant(datetime(2024, 3, 10, 2, 30), NY) == datetime(2024, 3, 10, 7, tzinfo=UTC)
    assert instant(datetime(2024, 11, 3, 1, 30), NY) == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    plain = instant(datetime(2024, 7, 1, 12), NY)
    assert plain == datetime(2024, 7, 1, 16, tzinfo=UTC) and plain.tzinfo is UTC


async def test_six_fields_descriptors_topic_job_and_meta() -> None:
    broker = MemoryBroker()
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 3, tzinfo=UTC))
    seconds = CronRule(cron="30 0 * * * *", type="sec", info="{ts}", topic="t1", job="j",
                       meta={"src": "cron"})
    app = make_app(broker, clock, seconds, "@hourly | hourly | {meta:x}{hh}")
    await run_until_end(app, clock)
    sent = tasks(broker, "t1")
    assert [t.info for t in sent] == ["20240101T000030", "20240101T010030", "20240101T020030"]
    assert {(t.job, t.meta, t.type) for t in sent} == {("j", "src=cron", "sec")}
    assert [t.info for t in tasks(broker, "hourly")] == ["01", "02", "03"]


async def test_replicas_with_a_ledger_send_each_task_once() -> None:
    # Given two replicas with the same rule, one ledger and one bus
    broker, ledger = MemoryBroker(), MemoryLedger()
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 6, tzinfo=UTC)
    clocks = [FakeClock(start, end), FakeClock(start, end)]
    apps = [make_app(broker, c, "0 * * * * | report | {hh}", ledger=ledger) for c in clocks]
    # When both run through six hours (and stop together: the first to stop closes the ledger)
    runners = [asyncio.create_task(a.run()) for a in apps]
    await asyncio.wait_for(asyncio.gather(*(c.reached.wait() for c in clocks)), 10)
    for app in apps:
        await app.stop()
    assert await asyncio.gather(*runners) == [0, 0]
    # Then six tasks went out, and the replica that came second skipped each
    sent = tasks(broker, "report")
    assert [t.info for t in sent] == ["01", "02", "03", "04", "05", "06"]
    assert sum(a.fired_elsewhere for a in apps) == 6
    assert sum(a.sender.sent for a in apps) == 6


async def test_a_replica_a_second_late_does_not_fire_a_tick_whose_task_is_done(tmp_path: Path) -> None:
    # Given two cron replicas with the same hourly rule, each with its own connection to one
    # SQLite ledger (as two processes would have)
    broker, path = MemoryBroker(), str(tmp_path / "ledger.db")
    rule = "0 * * * * | report | {hh}"
    first_clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 3, tzinfo=UTC))
    first = make_app(broker, first_clock, rule, ledger=SqliteLedger(path))
    # When the first fires at 01:00, 02:00 and 03:00 and a worker finishes each task
    await run_until_end(first, first_clock)
    async with SqliteLedger(path) as worker_ledger:
        for task in tasks(broker, "report"):
            await worker_ledger.done("report", task.id)
            assert await worker_ledger.find("report", task.id) is None
    # And the second replica, one second late, comes to the same ticks
    late_clock = FakeClock(datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
                           datetime(2024, 1, 1, 3, 0, 1, tzinfo=UTC))
    late = make_app(broker, late_clock, rule, ledger=SqliteLedger(path))
    await run_until_end(late, late_clock)
    # Then each tick was sent once only
    assert [t.info for t in tasks(broker, "report")] == ["01", "02", "03"]
    assert (late.sender.sent, late.fired_elsewhere) == (0, 3)


async def test_replicas_without_a_ledger_send_recognisable_duplicates() -> None:
    broker = MemoryBroker()
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 2, tzinfo=UTC)
    clocks = [FakeClock(start, end), FakeClock(start, end)]
    apps = [make_app(broker, c, "0 * * * * | report | {hh}") for c in clocks]
    await asyncio.gather(*(run_until_end(a, c) for a, c in zip(apps, clocks, strict=True)))
    ids = [t.id for t in tasks(broker, "report")]
    assert len(ids) == 4 and len(set(ids)) == 2


async def test_ledger_and_bus_failures_do_not_stop_the_schedule() -> None:
    broker, ledger = MemoryBroker(), MemoryLedger()
    ledger.inject(LedgerFault.UNAVAILABLE, 2)
    broker.inject(Fault.SEND_FAILS, 1)
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 4, tzinfo=UTC))
    app = make_app(broker, clock, "0 * * * * | r | {hh}", ledger=ledger)
    await run_until_end(app, clock)
    # The first tick met two ledger failures (its fire key, its record) and a bus failure,
    # and was sent by nobody; the others went out
    assert [t.info for t in tasks(broker, "r")] == ["02", "03", "04"]
    assert app.fire_keys is not None
    assert (app.fire_keys.errors, app.sender.ledger_errors, app.send_errors) == (1, 1, 1)


async def test_catch_up_all_after_downtime(tmp_path: Path) -> None:
    state = tmp_path / "cron-state.json"
    rule = "0 * * * * | r | {hh}"
    # Given a first run until 10:00 that kept its last run in the state file
    broker = MemoryBroker()
    clock = FakeClock(datetime(2024, 1, 1, 8, 30, tzinfo=UTC), datetime(2024, 1, 1, 10, tzinfo=UTC))
    await run_until_end(make_app(broker, clock, rule, catch_up="all", state_file=state), clock)
    assert [t.info for t in tasks(broker, "r")] == ["09", "10"]
    assert json.loads(state.read_text()).popitem()[1] == "2024-01-01T10:00:00Z"
    # When it comes back at 13:30 with catch_up = "all" and runs until 15:00
    clock = FakeClock(datetime(2024, 1, 1, 13, 30, tzinfo=UTC), datetime(2024, 1, 1, 15, tzinfo=UTC))
    await run_until_end(make_app(broker, clock, rule, catch_up="all", state_file=state), clock)
    # Then 11, 12 and 13 were sent on start-up, then 14 and 15 on time
    assert [t.info for t in tasks(broker, "r")] == ["09", "10", "11", "12", "13", "14", "15"]


async def test_a_fire_whose_send_failed_is_not_recorded_in_the_state_file(tmp_path: Path) -> None:
    state = tmp_path / "cron-state.json"
    rule = "0 * * * * | r | {hh}"

    async def run(start: datetime, end: datetime) -> CronApp:
        clock = FakeClock(start, end)
        app = make_app(broker, clock, rule, catch_up="all", state_file=state)
        await run_until_end(app, clock)
        return app

    # Given a run that sent 01:00, and one that could not reach the bus at 02:00
    broker = MemoryBroker()
    await run(datetime(2024, 1, 1, 0, 30, tzinfo=UTC), datetime(2024, 1, 1, 1, tzinfo=UTC))
    broker.inject(Fault.SEND_FAILS)
    failed = await run(datetime(2024, 1, 1, 1, 30, tzinfo=UTC), datetime(2024, 1, 1, 2, tzinfo=UTC))
    assert [t.info for t in tasks(broker, "r")] == ["01"] and failed.send_errors == 1
    # Then the state file still says 01:00 was the last run
    assert json.loads(state.read_text()).popitem()[1] == "2024-01-01T01:00:00Z"
    # And a restart with catch_up = "all" sends the 02:00 task the bus refused
    await run(datetime(2024, 1, 1, 2, 30, tzinfo=UTC), datetime(2024, 1, 1, 2, 40, tzinfo=UTC))
    assert [t.info for t in tasks(broker, "r")] == ["01", "02"]


async def test_catch_up_skip_after_downtime_and_after_a_suspend(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({CronRule.model_validate("0 * * * * | r | {hh}").key: "2024-01-01T10:00:00Z"}))
    broker = MemoryBroker()
    # Given a restart at 13:30 with skip, and a machine suspended for 3 hours after 15:00
    clock = FakeClock(datetime(2024, 1, 1, 13, 30, tzinfo=UTC), datetime(2024, 1, 1, 20, tzinfo=UTC),
                      suspend=(datetime(2024, 1, 1, 15, tzinfo=UTC), timedelta(hours=3, minutes=30)))
    app = make_app(broker, clock, "0 * * * * | r | {hh}", catch_up="skip", state_file=state)
    await run_until_end(app, clock)
    # Then nothing from the downtime is sent, and after the suspend only the latest run
    assert [t.info for t in tasks(broker, "r")] == ["14", "15", "18", "19", "20"]
    assert app.missed == 2


async def test_status_endpoint_serves_stats() -> None:
    broker, port = MemoryBroker(), free_port()
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 1, tzinfo=UTC))
    app = make_app(broker, clock, "@hourly | r | x", status_port=port)
    async with app:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await reader.read()
        writer.close()
        await writer.wait_closed()
    stats = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert stats["app"] == "cron" and stats["sent"] == 0


def test_settings_from_toml_flags_and_go_keys(tmp_path: Path) -> None:
    config = tmp_path / "cron.toml"
    config.write_text(
        'timezone = "Europe/Paris"\n'
        '[[rule]]\ncron = "0 5 * * *"\ntype = "daily"\ninfo = "s3://b/{day_slug}/"\noffset = "-1d"\n'
        '[rule.meta]\nteam = "data"\n'
        '[[rule]]\ncron = "@hourly"\ntype = "go"\ntemplate = "{slug}"\noffset = -1\n'
    )
    settings = load_settings(CronSettings, str(config))
    assert settings.timezone == "Europe/Paris"
    daily, go = settings.rule
    assert (daily.offset, daily.meta, go.info, go.offset) == ("-1d", {"team": "data"}, "{slug}", "-1h")
    flags = load_settings(CronSettings, None, rule=["*/5 * * * * | t | i | -1h"])
    assert flags.rule[0] == CronRule(cron="*/5 * * * *", type="t", info="i", offset="-1h")
    app = CronApp.from_settings(load_settings(CronSettings, str(config), bus="memory:cron-test"))
    assert len(app.rules) == 2 and str(app.tz) == "Europe/Paris"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"rule": ["61 * * * * | t | i"]}, "not a cron expression"),
        ({"rule": ["* * * * * | t | i | soon"]}, "not a duration"),
        ({"rule": ["* * * * *"]}, "CRON | TYPE"),
        ({"rule": ["@daily | t"], "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"catch_up": "some"}, "catch_up"),
    ],
)
def test_bad_settings_are_config_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(CronSettings, None, **flags)


def test_no_rules_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one rule"):
        CronApp.from_settings(load_settings(CronSettings, None, bus="memory:cron-test"))


async def test_start_next_run_and_each_send_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Given an hourly rule built from settings, on a clock at 00:30
    broker = MemoryBroker.named("cron-log-test")
    settings = load_settings(CronSettings, None, bus="memory:cron-log-test",
                             rule=["0 * * * * | fetch | logs/{hh}"])
    app = CronApp.from_settings(settings)
    clock = FakeClock(datetime(2024, 1, 31, 0, 30, tzinfo=UTC), datetime(2024, 1, 31, 2, 10, tzinfo=UTC))
    app.clock = clock
    # When it runs through two fire times
    with caplog.at_level(logging.INFO, "task.apps.cron"):
        await run_until_end(app, clock)
    # Then the log says how it runs, when the rule fires next, and each send with the next time
    first, second, *sends = caplog.messages
    assert first == "cron starting: bus=memory:cron-log-test timezone=UTC catch_up=skip rules=1"
    assert second == "rule 0 * * * * (fetch): next run at 2024-01-31T01:00:00+00:00"
    ids = [t.id for t in tasks(broker, "fetch")]
    line = "rule 0 * * * * (fetch) for 2024-01-31T0{}:00:00+00:00: sent task {} to 'fetch'; next run at {}"
    assert sends == [line.format(1, ids[0], "2024-01-31T02:00:00+00:00"),
                     line.format(2, ids[1], "2024-01-31T03:00:00+00:00")]
