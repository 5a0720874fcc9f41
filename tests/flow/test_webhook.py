"""Alert summaries posted to a real local HTTP server standing in for Slack: one summary
per burst, a line per type:job with counts and times, a link to the day's alerts page; the
min/max backoff on an injected clock; incomplete alerts included; a failing webhook keeps
its summary and tries again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from task.apps.flow import FlowApp, FlowSettings
from task.bus.memory import MemoryBroker
from task.errors import ConfigError
from task.flow.alert_summary import SummaryLine
from task.flow.store import AlertKind, AlertRecord
from task.flow.webhook import SummaryBackoff, WebhookNotifier, summary_payload
from task.ledger.memory import MemoryLedger
from task.task import Task
from tests.browser import ARTIFACTS
from tests.flow.flow_harness import TestClock, bodies, memory_app, write_workflows
from tests.servers.ports import free_port

FIVE = datetime(2024, 1, 31, 5, 0, tzinfo=UTC)


class Receiver:
    """A local HTTP server that keeps what is posted to it; ``fail`` makes it answer 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.fail = False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: web.Request) -> web.Response:
        if self.fail:
            return web.Response(status=500, text="down for maintenance")
        self.received.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = FIVE.timestamp()

    def __call__(self) -> float:
        return self.now


def alert(at: float, type: str, job: str = "", kind: AlertKind = AlertKind.ERROR) -> AlertRecord:
    return AlertRecord(at=at, id=f"id-{type}", type=type, job=job, kind=kind, msg="failed")


async def step(hook: WebhookNotifier, clock: Clock, to: float) -> None:
    """Move the clock to ``to`` and let the hook send what is due (as the app's tick does)."""
    clock.now = FIVE.timestamp() + to
    hook.poke()
    await hook.settle()


async def test_a_burst_is_one_summary_with_a_line_per_type_job(receiver: Receiver) -> None:
    clock = Clock()
    hook = WebhookNotifier(receiver.url, console_url="http://flow:8090", min_wait=60,
                           max_wait=240, clock=clock)
    # Given a burst of alerts on two task types within a minute
    for offset, type, job, kind in ((0, "load", "hourly", AlertKind.ERROR),
                                    (10, "load", "hourly", AlertKind.ERROR),
                                    (20, "report", "", AlertKind.INCOMPLETE),
                                    (30, "load", "hourly", AlertKind.INCOMPLETE)):
        clock.now = FIVE.timestamp() + offset
        await hook.notify(alert(clock.now, type, job, kind), Task.new(type, ""))
    # Then nothing goes before min_wait after the first, and one summary goes then
    await step(hook, clock, 59)
    assert receiver.received == []
    await step(hook, clock, 60)
    [summary] = receiver.received
    assert summary["text"].splitlines() == [
        "*taskbus flow: 4 alerts on 2 task types*",
        "• `load:hourly`: 3 (2 error, 1 incomplete), 05:00:00–05:00:30 UTC",
        "• `report`: 1 (1 incomplete), 05:00:20 UTC",
        "<http://flow:8090/console/alerts?day=2024-01-31|alerts of 2024-01-31>",
    ]
    assert list(summary) == ["text"]
    await hook.stop()


async def test_summaries_back_off_from_min_to_max_and_relax_when_quiet(receiver: Receiver) -> None:
    clock = Clock()
    hook = WebhookNotifier(receiver.url, min_wait=60, max_wait=240, clock=clock)
    sent_at: list[float] = []

    async def alert_at(t: float) -> None:
        clock.now = FIVE.timestamp() + t
        await hook.notify(alert(clock.now, "load"), Task.new("load", ""))

    async def run_until(t: float) -> None:
        for second in range(int(clock.now - FIVE.timestamp()) + 1, int(t) + 1):
            before = len(receiver.received)
            await step(hook, clock, second)
            if len(receiver.received) > before:
                sent_at.append(second)

    # Given alerts that keep coming, one every 50 s for 15 minutes
    for t in range(0, 900, 50):
        await alert_at(t)
        await run_until(t + 49)
    await run_until(4000)
    # Then the summaries space out: min_wait after the first alert, then 120 s, 240 s (max)
    assert sent_at == [60, 180, 420, 660, 900]
    # When it went quiet for an hour, the next alert is summarised min_wait after it again
    count = len(receiver.received)
    await alert_at(4000)
    await run_until(4059)
    assert len(receiver.received) == count
    await run_until(4060)
    assert len(receiver.received) == count + 1
    # every alert was summarised once
    assert sum(int(s["text"].split("`: ")[1].split(" ")[0]) for s in receiver.received) == 19
    await hook.stop()


def test_the_backoff_doubles_up_to_max_and_halves_per_quiet_wait() -> None:
    backoff = SummaryBackoff(60, 240)
    assert backoff.due_at(0) == 60
    backoff.sent(60, 0)  # wait 120
    assert backoff.due_at(70) == 180
    backoff.sent(180, 70)  # wait 240
    backoff.sent(420, 200)  # wait 240 (max)
    assert backoff.wait == 240
    # quiet from 420: at 2000 the first alert relaxes 240 -> 120 -> 60
    assert backoff.due_at(2000) == 2060
    with pytest.raises(ValueError, match="min"):
        SummaryBackoff(60, 30)


async def test_a_failing_webhook_keeps_the_summary_and_tries_again(receiver: Receiver) -> None:
    clock = Clock()
    hook = WebhookNotifier(receiver.url, min_wait=60, max_wait=240, clock=clock)
    await hook.notify(alert(clock.now, "load"), Task.new("load", ""))
    receiver.fail = True
    await step(hook, clock, 60)
    assert receiver.received == [] and hook.errors == 1
    # an alert while it was down joins the same summary
    clock.now += 10
    await hook.notify(alert(clock.now, "load"), Task.new("load", ""))
    receiver.fail = False
    await step(hook, clock, 119)
    assert receiver.received == []
    await step(hook, clock, 120)
    [summary] = receiver.received
    assert "`load`: 2 (2 error)" in summary["text"]
    await hook.stop()


async def test_stopping_sends_what_is_pending(receiver: Receiver) -> None:
    clock = Clock()
    hook = WebhookNotifier(receiver.url, min_wait=600, max_wait=3600, clock=clock)
    await hook.notify(alert(clock.now, "load"), Task.new("load", ""))
    await hook.stop()
    assert len(receiver.received) == 1


async def test_flow_sends_incomplete_alerts_to_the_webhook(receiver: Receiver, tmp_path: Path) -> None:
    # Given flow with a webhook on its own clock, a 1h task_ttl, and a load created at 05:00
    broker, clock = MemoryBroker(), TestClock()
    hook = WebhookNotifier(receiver.url, console_url="http://127.0.0.1:8090", min_wait=60,
                           max_wait=3600, clock=lambda: clock.now().timestamp())
    app = memory_app(broker, write_workflows(tmp_path / "wf"), clock, ledger=MemoryLedger(),
                     webhook=hook, task_ttl=3600.0)
    async with app:
        clock.set(FIVE)
        await app.tick()
        [load] = bodies(broker, "load")
        # When no worker finishes it within the hour
        clock.set(FIVE + timedelta(hours=1, minutes=1))
        await app.tick()
        assert receiver.received == []
        clock.advance(60)
        await app.tick()
        await hook.settle()
        # Then the webhook received the incomplete alert in a summary linking the day's alerts
        [summary] = receiver.received
        assert "`load:hourly`: 1 (1 incomplete)" in summary["text"]
        assert "<http://127.0.0.1:8090/console/alerts?day=2024-01-31|" in summary["text"]
        assert app.stats()["webhook_summaries"] == 1
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "webhook-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        del load


def test_settings_refuse_a_max_wait_below_min_and_a_bad_url(tmp_path: Path) -> None:
    workflows = write_workflows(tmp_path / "wf")
    base: dict[str, Any] = {"workflow": str(workflows), "bus": "memory://"}
    with pytest.raises(ConfigError, match="--alert-max-wait .* less than --alert-min-wait"):
        FlowApp.from_settings(FlowSettings(**base, webhook="http://h/x", alert_min_wait=600,
                                           alert_max_wait=60))
    with pytest.raises(ConfigError, match="give an http:// or https:// URL"):
        FlowApp.from_settings(FlowSettings(**base, webhook="hooks.slack.com/x"))
    app = FlowApp.from_settings(FlowSettings(**base, webhook="https://hooks.slack.com/services/T/B/secret",
                                             status_port=8090))
    assert app.webhook is not None and app.webhook.console_url == "http://127.0.0.1:8090"
    assert app.startup["webhook"] == "hooks.slack.com"  # the path is the webhook's secret


def test_a_summary_across_midnight_dates_its_times_and_links_both_days() -> None:
    late, early = FIVE.timestamp() - 5 * 3600 - 60, FIVE.timestamp() - 5 * 3600 + 60  # 23:59, 00:01
    line = SummaryLine("load", "hourly")
    line.add(alert(late, "load", "hourly"))
    line.add(alert(early, "load", "hourly", AlertKind.INCOMPLETE))
    text = summary_payload([line], "http://flow:8090/")["text"]
    assert "`load:hourly`: 2 (1 error, 1 incomplete), 2024-01-30 23:59:00–2024-01-31 00:01:00 UTC" in text
    assert text.endswith("<http://flow:8090/console/alerts?day=2024-01-30|alerts of 2024-01-30> "
                         "<http://flow:8090/console/alerts?day=2024-01-31|alerts of 2024-01-31>")
    # markup in a type name cannot break Slack's formatting
    odd = SummaryLine("<!channel>", "")
    odd.add(alert(late, "<!channel>"))
    assert "`&lt;!channel&gt;`" in summary_payload([odd])["text"]
