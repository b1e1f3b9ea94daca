"""Alert webhooks: every alert the server's streams raise, POSTed as JSON to each URL.

Delivery never slows a stream: a stream only appends to a bounded in-memory queue (one per
URL) and one task per URL sends from it, in order, one request at a time. A request that
fails (a non-2xx answer, a connection error, no answer within `timeout`) is retried
`retries` times with exponential backoff (`backoff`, 2×, 4×, … seconds), then given up. When
a queue is full the oldest alert waiting in it is dropped for the new one: a receiver that
is down or slow loses the oldest alerts, never the stream's rate. Every outcome is counted
in /metrics (delivered, failed attempts, given up, dropped, queued now).

Which alerts: those of every stream or broadcast that asked for alerts, each alert once per
(log, seq, rule) among the last `REMEMBER` sent (two clients replaying the same log, or one
seeking back over it, post it once). Alerts still queued when the server stops are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from analysis.alerts import Alert
from replayer.alerting import alert_payload
from replayer.metrics import Metrics

__all__ = ["REMEMBER", "Webhook", "Webhooks"]

REMEMBER = 100_000  # (log, seq, rule) keys kept to post each alert once
_HEADERS = {"Content-Type": "application/json", "User-Agent": "ticktape-alerts"}


class Webhook:
    """One URL: its bounded queue and the task that posts from it."""

    def __init__(self, url: str, *, metrics: Metrics, timeout: float, retries: int,
                 backoff: float, queue_size: int) -> None:
        self.url, self.metrics = url, metrics
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.queue_size = queue_size
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, body: bytes) -> None:
        """Queue one alert's JSON body (never waits): the oldest goes if the queue is full."""
        if len(self._queue) >= self.queue_size:
            self._queue.popleft()
            self.metrics.webhook_dropped += 1
            self.metrics.webhook_queued -= 1
        self._queue.append(body)
        self.metrics.webhook_queued += 1
        self._ready.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Post queued alerts in order until cancelled."""
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            body = self._queue.popleft()
            self.metrics.webhook_queued -= 1
            await self._post(session, body)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                async with session.post(self.url, data=body, headers=_HEADERS,
                                        timeout=timeout) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self.metrics.webhook_delivered += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass  # counted below, like an error status; the receiver's problem, not ours
            self.metrics.webhook_failures += 1
        self.metrics.webhook_abandoned += 1


class Webhooks:
    """Every `--alert-webhook` URL, fed with the alerts of the server's streams (once each)."""

    def __init__(self, urls: tuple[str, ...], *, metrics: Metrics, timeout: float = 5.0,
                 retries: int = 3, backoff: float = 0.5, queue_size: int = 1_000) -> None:
        self.hooks = [Webhook(url, metrics=metrics, timeout=timeout, retries=retries,
                              backoff=backoff, queue_size=queue_size) for url in urls]
        self._seen: OrderedDict[tuple[str, int, str], None] = OrderedDict()

    def offer(self, alerts: list[Alert]) -> None:
        """Called by the streams (event loop, never blocks): queue each new alert for every URL."""
        for alert in alerts:
            key = (alert.log, alert.seq, alert.rule)
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > REMEMBER:
                self._seen.popitem(last=False)
            body = orjson.dumps(alert_payload(alert))
            for hook in self.hooks:
                hook.offer(body)

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the HTTP session and one sender task per URL."""
        async with aiohttp.ClientSession() as session:
            # Task references held for the app's lifetime; cancelled and awaited at cleanup.
            tasks = [asyncio.create_task(hook.run(session), name=f"webhook-{i}")
                     for i, hook in enumerate(self.hooks)]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

