"""Alert webhooks against a real local HTTP receiver that fails (500), stalls past the timeout
and recovers: retries, de-duplication, a full queue, /metrics, and a stream that finishes
whole while its webhook is stuck."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from analysis.alerts import AlertConfig, evaluate_log, parse_rules
from recorder.log import Log
from replayer.alerting import alert_payload
from replayer.config import ServerConfig
from tests.conftest import make_log, run_cli
from tests.replay_helpers import Client, assert_exactly_once, serve_in_process

RULES = """
[rules.price_move]
threshold = 0.002
[rules.silence]
min_gap = "300ms"
"""


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    make_log(data / "pair", ticks=20_000, symbols="BTC-USD,ETH-USD", rate=20)
    return data


@pytest.fixture(scope="module")
def rules() -> AlertConfig:
    return parse_rules(RULES, "rules.toml")


@pytest.fixture(scope="module")
def expected(logs: Path, rules: AlertConfig) -> list[dict[str, Any]]:
    alerts = [alert_payload(a) for a in evaluate_log(rules, Log(logs / "pair"))]
    assert len(alerts) >= 20
    return alerts


@dataclass
class Receiver:
    """A webhook endpoint: answers 500 to the first `fail` requests; then, with `stall`,
    holds every request until `release` is set (the server's timeout fires first); then
    accepts (204)."""

    fail: int = 0
    stall: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        assert request.content_type == "application/json"
        try:
            if self.requests <= self.fail:
                return web.Response(status=500, text="down")
            if self.stall and not self.release.is_set():
                await self.release.wait()
                # A stalled request fails even if the server still waits for it: it counts
                # as one failed attempt either way (timed out, or this 503).
                return web.Response(status=503)
            self.accepted.append(orjson.loads(body))
            return web.Response(status=204)
        finally:
            self.changed.set()

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"{len(self.accepted)} of {count} delivered"
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.2)


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        receiver.release.set()
        await runner.cleanup()


async def _metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r"^(ticktape_(?:webhook|alerts)_\w+) (\S+)$", text, re.M)}


async def _replay(url: str, **subscribe: Any) -> Client:
    client = Client()
    await client.connect(url)
    try:
        ack = await client.call("subscribe", {"log": "pair", "speed": "max", "alerts": True,
                                              **subscribe})
        assert ack["ok"], ack
        await client.wait_end(60)
    finally:
        await client.close()
    return client


async def test_fails_stalls_recovers_and_never_slows_the_stream(
        logs: Path, rules: AlertConfig, expected: list[dict[str, Any]]) -> None:
    receiver = Receiver(fail=3, stall=True)
    async with receiving(receiver) as hook:
        config = ServerConfig(path=logs, port=0, alert_rules=rules, alert_webhooks=(hook,),
                              webhook_timeout=0.3, webhook_retries=20, webhook_backoff=0.001)
        async with serve_in_process(config) as served:
            # The receiver answers nothing in time until the stream has sent every tick:
            # the stream finishes whole while the first alert is being retried.
            client = await _replay(served.url)
            assert_exactly_once(client.seqs(), 0, 20_000)
            assert client.seqs() == list(range(20_000))
            assert receiver.accepted == []
            deadline = time.monotonic() + 30
            while receiver.requests <= 3:  # at least one attempt stalled past the timeout
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            receiver.release.set()
            await receiver.wait_for(len(expected))
            # Each alert once, in order, with its log; the failed ones were retried.
            assert receiver.accepted == expected
            figures = await _metrics(served.url)
            failures = figures["ticktape_webhook_failures_total"]
            assert figures["ticktape_webhook_delivered_total"] == len(expected)
            assert failures >= 4 and receiver.requests == len(expected) + failures
            assert figures["ticktape_webhook_abandoned_total"] == 0
            assert figures["ticktape_webhook_dropped_total"] == 0
            assert figures["ticktape_webhook_queued"] == 0
            assert figures["ticktape_alerts_sent_total"] == len(expected)


async def test_each_alert_once_across_streams(
        logs: Path, rules: AlertConfig, expected: list[dict[str, Any]]) -> None:
    receiver = Receiver()
    async with receiving(receiver) as hook:
        config = ServerConfig(path=logs, port=0, alert_rules=rules, alert_webhooks=(hook,))
        async with serve_in_process(config) as served:
            await asyncio.gather(_replay(served.url), _replay(served.url),
                                 _replay(served.url, from_seq=5_000),
                                 _replay(served.url, alerts=["price_move"]))
            await _replay(served.url, alerts=False)  # no alerts asked: none sent for it
            await receiver.wait_for(len(expected))
            figures = await _metrics(served.url)
    key = lambda a: (a["seq"], a["rule"])  # noqa: E731
    assert sorted(receiver.accepted, key=key) == sorted(expected, key=key)
    assert figures["ticktape_webhook_delivered_total"] == len(expected)
    # Four streams asked for alerts; each alert reached its clients once per stream.
    assert figures["ticktape_alerts_sent_total"] == 2 * len(expected) + len(
        [a for a in expected if a["seq"] >= 5_000]) + len(
        [a for a in expected if a["rule"] == "price_move"])


async def test_full_queue_drops_the_oldest_and_failures_are_abandoned(
        logs: Path, rules: AlertConfig, expected: list[dict[str, Any]]) -> None:
    receiver = Receiver(fail=10**9)  # always 500
    async with receiving(receiver) as hook:
        config = ServerConfig(path=logs, port=0, alert_rules=rules, alert_webhooks=(hook,),
                              webhook_retries=1, webhook_backoff=0.5, webhook_queue=4)
        async with serve_in_process(config) as served:
            client = await _replay(served.url)
            assert_exactly_once(client.seqs(), 0, 20_000)
            deadline = time.monotonic() + 60
            while True:
                figures = await _metrics(served.url)
                done = figures["ticktape_webhook_abandoned_total"] + \
                    figures["ticktape_webhook_dropped_total"]
                if done == len(expected):
                    break
                assert time.monotonic() < deadline, figures
                await asyncio.sleep(0.1)
    # The stream outran the retrying sender: the queue held 4, older ones were dropped.
    assert figures["ticktape_webhook_dropped_total"] >= len(expected) - 4 - 2
    assert figures["ticktape_webhook_failures_total"] == 2 * figures[
        "ticktape_webhook_abandoned_total"]
    assert figures["ticktape_webhook_delivered_total"] == 0
    assert figures["ticktape_webhook_queued"] == 0
    assert receiver.requests == figures["ticktape_webhook_failures_total"]


def test_replay_refuses_a_bad_webhook(logs: Path) -> None:
    result = run_cli("replay", str(logs), "--port", "0", "--alert-webhook", "ftp://x/hook",
                     timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --alert-webhook must be an http:// or https:// "
                                     "URL, got 'ftp://x/hook'")
    result = run_cli("replay", str(logs), "--port", "0", "--alert-webhook", "http://x/",
                     "--alert-webhook-timeout", "0", timeout=30)
    assert result.returncode == 2
    assert "--alert-webhook-timeout must be within [0.01, 300] s" in result.stderr
