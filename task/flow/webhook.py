"""Alert summaries to a webhook (Slack-compatible): one message per batch, not one per alert.

At 3 a.m. a failing database makes a hundred tasks fail at once; one message saying so is
read, a hundred are muted. Alerts are added up per type:job (``alert_summary``) and sent as
one summary: a line per type:job with its count, its kinds and its first and last times, and
a link to the console's alerts page of each day concerned. The payload is Slack's incoming
webhook format (``{"text": ...}`` in Slack's mrkdwn), which Mattermost, Rocket.Chat and
most chat tools accept too.

When summaries go (``SummaryBackoff``), as Go's flowlord spaces its Slack messages between a
min and a max frequency:

- the first alert after a quiet spell waits ``min_wait`` for the others of its burst;
- while alerts keep coming, each summary waits twice as long as the one before (at least
  ``min_wait``, at most ``max_wait``) after it;
- every whole wait that passes with nothing to send halves the wait again, down to
  ``min_wait``.

Every alert is in the task store already; a webhook that fails keeps its summary and tries
again ``min_wait`` later. ``stop()`` sends what is pending (best effort, ``timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from task.flow.alert_summary import SummaryLine
from task.flow.store import AlertRecord
from task.task import Task

__all__ = ["SummaryBackoff", "WebhookNotifier", "summary_payload"]

logger = logging.getLogger(__name__)


class SummaryBackoff:
    """When the next summary may go: the rules in the module docstring. Times are Unix
    seconds from the caller's clock; nothing here reads a clock or sleeps."""

    def __init__(self, min_wait: float, max_wait: float) -> None:
        if min_wait <= 0 or max_wait < min_wait:
            raise ValueError(f"alert waits: need 0 < min ({min_wait}) <= max ({max_wait})")
        self.min_wait = min_wait
        self.max_wait = max_wait
        #: the wait after the last summary
        self.wait = min_wait
        self.last_sent = float("-inf")
        #: after a failed delivery: not before this
        self.retry_at = float("-inf")

    def _relaxed(self, first_pending: float) -> float:
        """The wait, halved once for each whole wait that passed with nothing to send."""
        wait = self.wait
        idle = first_pending - (self.last_sent + wait)
        while wait > self.min_wait and idle >= wait:
            idle -= wait
            wait = max(wait / 2, self.min_wait)
        return wait

    def due_at(self, first_pending: float) -> float:
        """When the summary holding alerts since ``first_pending`` goes."""
        return max(first_pending + self.min_wait, self.last_sent + self._relaxed(first_pending),
                   self.retry_at)

    def sent(self, now: float, first_pending: float) -> None:
        """A summary went at ``now``: the next one waits twice as long (up to ``max_wait``)."""
        self.wait = min(self._relaxed(first_pending) * 2, self.max_wait)
        self.last_sent = now
        self.retry_at = float("-inf")

    def failed(self, now: float) -> None:
        """A delivery failed at ``now``: try again ``min_wait`` later."""
        self.retry_at = now + self.min_wait


def _slack(text: str) -> str:
    """``text`` escaped for Slack's mrkdwn (its three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary_payload(lines: list[SummaryLine], console_url: str = "") -> dict[str, str]:
    """The Slack-compatible message for ``lines``: a heading, one line per type:job, links
    to the console's alerts page of each day (when ``console_url`` is given)."""
    total = sum(line.count for line in lines)
    days = sorted({day for line in lines for day in line.days})
    heading = f"taskbus flow: {total} alert{'s' if total != 1 else ''} on {len(lines)} task type{'s' if len(lines) != 1 else ''}"
    out = [f"*{_slack(heading)}*"]
    for line in lines:
        out.append(f"• `{_slack(line.name)}`: {line.count} ({_slack(line.kinds_text())}), "
                   f"{_slack(line.span_text())}")
    if console_url:
        base = console_url.rstrip("/")
        out.append(" ".join(f"<{base}/console/alerts?day={day.isoformat()}|alerts of {day.isoformat()}>"
                            for day in days))
    return {"text": "\n".join(out)}


class WebhookNotifier:
    """A ``Notifier`` that sends alert summaries to ``url``; also a lifecycle part
    (``start``/``stop``). ``poke()`` (the flow app's tick calls it) sends the summary once it
    is due, in the background, so a slow webhook never holds the tick."""

    def __init__(
        self,
        url: str,
        *,
        console_url: str = "",
        min_wait: float = 60.0,
        max_wait: float = 3600.0,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.console_url = console_url
        self.backoff = SummaryBackoff(min_wait, max_wait)
        self.clock = clock
        self.timeout = timeout
        self._pending: dict[tuple[str, str], SummaryLine] = {}
        self._first_pending: float | None = None
        self._sending: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.errors = 0

    async def notify(self, alert: AlertRecord, task: Task) -> None:
        """Count ``alert`` into the next summary (sent by ``poke`` when due)."""
        key = (alert.type, alert.job)
        line = self._pending.get(key)
        if line is None:
            line = self._pending[key] = SummaryLine(alert.type, alert.job)
        line.add(alert)
        if self._first_pending is None:
            self._first_pending = self.clock()

    def due_at(self) -> float | None:
        """When the pending summary goes; None when nothing is pending."""
        if self._first_pending is None:
            return None
        return self.backoff.due_at(self._first_pending)

    def poke(self) -> None:
        """Start sending the summary when it is due and none is on its way."""
        due = self.due_at()
        if due is None or self.clock() < due or self.sending:
            return
        self._sending = asyncio.create_task(self._send())

    @property
    def sending(self) -> bool:
        """True while a summary is on its way."""
        return self._sending is not None and not self._sending.done()

    async def settle(self) -> None:
        """Wait for the summary on its way, if any (tests; ``stop``)."""
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)

    async def _send(self) -> None:
        lines = sorted(self._pending.values(), key=lambda line: (-line.count, line.name))
        first = self._first_pending if self._first_pending is not None else self.clock()
        self._pending, self._first_pending = {}, None
        payload = summary_payload(lines, self.console_url)
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            async with self._session.post(
                self.url, json=payload, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as answer:
                if answer.status >= 300:
                    raise aiohttp.ClientResponseError(answer.request_info, (), status=answer.status,
                                                      message=(await answer.text())[:200])
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            self.errors += 1
            self.backoff.failed(self.clock())
            self._merge_back(lines, first)
            logger.error("alert webhook %s: %s; %d alerts kept, tried again in %gs",
                         self.url, err or type(err).__name__, sum(line.count for line in lines),
                         self.backoff.min_wait)
            return
        self.sent += 1
        self.backoff.sent(self.clock(), first)
        logger.info("alert summary sent to the webhook: %d alerts on %d task types",
                    sum(line.count for line in lines), len(lines))

    def _merge_back(self, lines: list[SummaryLine], first: float) -> None:
        """Put a summary that could not go back in front of what came since."""
        for line in lines:
            newer = self._pending.get((line.type, line.job))
            if newer is not None:
                line.count += newer.count
                for kind, n in newer.kinds.items():
                    line.kinds[kind] = line.kinds.get(kind, 0) + n
                line.first, line.last = min(line.first, newer.first), max(line.last, newer.last)
                line.days = sorted(set(line.days) | set(newer.days))
            self._pending[(line.type, line.job)] = line
        self._first_pending = first if self._first_pending is None else min(first, self._first_pending)

    async def start(self) -> None:
        """Nothing: the HTTP session opens with the first summary."""

    async def stop(self) -> None:
        """Send what is pending now (once, best effort), then close. Idempotent."""
        await self.settle()
        if self._pending:
            self._sending = asyncio.create_task(self._send())
            await self.settle()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> dict[str, object]:
        """Counters for ``/stats``."""
        due = self.due_at()
        return {"webhook_summaries": self.sent, "webhook_errors": self.errors,
                "webhook_pending": sum(line.count for line in self._pending.values()),
                "webhook_next": None if due is None else datetime.fromtimestamp(due, UTC).isoformat()}
