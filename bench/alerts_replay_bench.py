"""Live alerts in a replay: the rate at "max" with the default rules on vs off, how soon an
`alert` follows the `ticks` batch holding its seq at 1x, the warm-up cost of `from_seq`, and
a stream's rate with a slow webhook vs without one.

The server runs in its own process (`ticktape replay`); the client is a lean WebSocket
Socket.IO client (as bench/ws_client.py) that also notes `alert` events and their arrival.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from bench.common import Report, header
from bench.replay_bench import _Proc, _record
from bench.ws_client import subscribed
from recorder.config import SimConfig, parse_symbols
from recorder.record import RecordConfig, record
from tests.conftest import free_port

# Rules that fire often: ~8 alerts/s on the 1 kHz log (latency), and ~4,400 per 1M ticks
# of the 20 Hz log (webhook: more than a 50 ms receiver takes, so its queue overflows).
LATENCY_RULES = """
[rules.price_move]
threshold = 0.00005
window = "1s"
cooldown = "100ms"
"""
WEBHOOK_RULES = """
[rules.price_move]
threshold = 0.001
window = "60s"
cooldown = "10s"
"""


@dataclass
class Seen:
    ticks: int = 0
    alerts: int = 0
    ended: bool = False
    acked: float = 0.0  # seconds from subscribe to its ack
    # (wall, kind, first seq, last seq): kind "t" for ticks, "a" for an alert (seq twice)
    events: list[tuple[float, str, int, int]] = field(default_factory=list)


async def _client(url: str, subscribe: dict[str, Any], *, keep: bool = False,
                  limit_s: float = 600) -> Seen:
    out = Seen()
    async with subscribed(url, subscribe) as (ws, sent):
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not out.ended:
            msg = await ws.receive()
            now = time.perf_counter()
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                continue
            text: str = msg.data
            if text == "2":
                await ws.send_str("3")
            elif text.startswith('42["ticks"'):
                if keep:
                    seq = orjson.loads(text[2:])[1]["seq"]
                    out.ticks += len(seq)
                    out.events.append((now, "t", seq[0], seq[-1]))
                else:  # count without parsing every batch: the seq list's commas
                    start = text.index('"seq":[') + 7
                    out.ticks += text.count(",", start, text.index("]", start)) + 1
            elif text.startswith('42["alert"'):
                out.alerts += 1
                if keep:
                    seq = orjson.loads(text[2:])[1]["seq"]
                    out.events.append((now, "a", seq, seq))
            elif text.startswith("431["):
                out.acked = now - sent
                if not orjson.loads(text[3:])[0].get("ok"):
                    raise RuntimeError(f"subscribe refused: {text}")
            elif text.startswith('42["end"'):
                out.ended = True
    return out


def _rate(url: str, subscribe: dict[str, Any]) -> tuple[float, Seen]:
    began = time.perf_counter()
    seen = asyncio.run(_client(url, subscribe))
    return seen.ticks / (time.perf_counter() - began), seen


def _server(path: Path, port: int, *extra: str) -> _Proc:
    return _Proc([sys.executable, "-m", "ticktape", "replay", str(path), "--port", str(port),
                  *extra], " at http://")


def _latencies(seen: Seen) -> tuple[np.ndarray, np.ndarray]:
    """Per alert: seconds since the ticks batch holding its seq arrived; and the gaps
    between consecutive ticks batches (the baseline: the stream's own rhythm)."""
    late: list[float] = []
    gaps: list[float] = []
    batch: tuple[float, int, int] | None = None
    for wall, kind, first, last in seen.events:
        if kind == "t":
            if batch is not None:
                gaps.append(wall - batch[0])
            batch = (wall, first, last)
        else:
            assert batch is not None and batch[1] <= first <= batch[2], "alert out of order"
            late.append(wall - batch[0])
    return np.array(late), np.array(gaps)


# A slow webhook receiver in its own process (so it does not share the client's core):
# answers each POST after `delay` seconds, and GET /count with how many it received.
_RECEIVER = """
import asyncio, sys
from aiohttp import web
count = 0
async def hook(request):
    global count
    await request.read()
    await asyncio.sleep(float(sys.argv[2]))
    count += 1
    return web.Response(status=204)
async def total(request):
    return web.Response(text=str(count))
app = web.Application()
app.router.add_post("/hook", hook)
app.router.add_get("/count", total)
print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def run(quick: bool = False) -> Report:
    rep = header("Alerts in a replay (server in its own process; lean WebSocket client)")
    work = Path(tempfile.mkdtemp(prefix="ticktape-bench-alerts-"))
    try:
        data = work / "data"
        data.mkdir()
        latency_rules, webhook_rules = work / "latency.toml", work / "webhook.toml"
        latency_rules.write_text(LATENCY_RULES)
        webhook_rules.write_text(WEBHOOK_RULES)
        n = 500_000 if quick else 3_000_000
        record(RecordConfig(path=data / "tp", sim=SimConfig(
            seed=1, rate=20.0, symbols=parse_symbols("BTC-USD,ETH-USD")), ticks=n))
        port = free_port()
        url = f"http://127.0.0.1:{port}"

        # (a) max speed, default rules on vs off, same server, alternating, best of 3.
        server = _server(data, port)
        try:
            time.sleep(0.5)
            on: list[float] = []
            off: list[float] = []
            alerts = 0
            for _ in range(2 if quick else 3):
                rate, _seen = _rate(url, {"log": "tp", "speed": "max"})
                off.append(rate)
                rate, seen = _rate(url, {"log": "tp", "speed": "max", "alerts": True})
                on.append(rate)
                alerts = seen.alerts
            rep.add(f"max speed, default alerts on ({alerts} alerts)", max(on), "ticks/s",
                    baseline=max(off), baseline_name="same server, alerts off",
                    target=">= 0.8x")
            # from_seq near the end: the ack waits for the warm-up pass over [0, from_seq).
            last = n - 1
            warm = min(asyncio.run(_client(url, {"log": "tp", "speed": "max", "from_seq": last,
                                                 "alerts": True})).acked for _ in range(2))
            cold = min(asyncio.run(_client(url, {"log": "tp", "speed": "max",
                                                 "from_seq": last})).acked for _ in range(2))
            rep.add(f"subscribe ack at from_seq {last:,}, alerts on (warm-up)", warm * 1e3,
                    "ms", baseline=cold * 1e3, baseline_name="alerts off",
                    higher_is_better=False, target="documented")
            rep.add("warm-up cost per event before from_seq", (warm - cold) / last * 1e9,
                    "ns/tick", target="documented")
        finally:
            server.stop()

        # (b) latency at 1x: alert after the ticks batch holding its seq (1 kHz log).
        seconds = 10 if quick else 30
        _record(data / "khz", seconds * 1_000, rate=1_000.0)
        server = _server(data, port, "--rules", str(latency_rules))
        try:
            time.sleep(0.5)
            seen = asyncio.run(_client(url, {"log": "khz", "speed": 1, "alerts": True},
                                       keep=True))
        finally:
            server.stop()
        late, gaps = _latencies(seen)
        gap50 = float(np.percentile(gaps, 50)) * 1e3
        rep.add(f"1x: alert after its ticks batch, p50 ({len(late)} alerts)",
                float(np.percentile(late, 50)) * 1e3, "ms", baseline=gap50,
                baseline_name="gap between ticks batches p50", higher_is_better=False)
        rep.add("1x: alert after its ticks batch, p99", float(np.percentile(late, 99)) * 1e3,
                "ms", baseline=gap50, baseline_name="gap between ticks batches p50",
                higher_is_better=False, target="<= 5 ms")

        # (c) a slow webhook (each POST answered after 50 ms) must not slow the stream.
        hook_port = free_port()
        receiver = _Proc([sys.executable, "-c", _RECEIVER, str(hook_port), "0.05"], "ready")
        hook = f"http://127.0.0.1:{hook_port}"
        rates: dict[str, float] = {}
        try:
            for name, extra in (("without", []), ("with", ["--alert-webhook", hook + "/hook"])):
                server = _server(data, port, "--rules", str(webhook_rules), *extra)
                try:
                    time.sleep(0.5)
                    best = 0.0
                    for _ in range(2 if quick else 3):
                        rate, seen = _rate(url, {"log": "tp", "speed": "max", "alerts": True})
                        best = max(best, rate)
                    rates[name] = best
                    if name == "with":
                        text = asyncio.run(_metrics(url))
                        received = int(asyncio.run(_metrics(hook, "/count")))
                finally:
                    server.stop()
        finally:
            receiver.stop()
        rep.add(f"max speed with a 50 ms webhook ({seen.alerts} alerts)", rates["with"],
                "ticks/s", baseline=rates["without"], baseline_name="same rules, no webhook",
                target="no drop (>= 0.9x)")
        figures = {k: v for k, v in (line.split(" ", 1) for line in text.splitlines()
                                     if line.startswith("ticktape_webhook"))}
        rep.add("webhook: delivered during those replays",
                float(figures.get("ticktape_webhook_delivered_total", 0)), "alerts",
                baseline=float(received), baseline_name="received by the 50 ms receiver")
        rep.add("webhook: dropped (full queue, oldest first)",
                float(figures.get("ticktape_webhook_dropped_total", 0)), "alerts",
                target="counted")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.save()
    return rep


async def _metrics(url: str, path: str = "/metrics") -> str:
    async with aiohttp.ClientSession() as session, session.get(url + path) as response:
        return await response.text()
