"""Fleet (`replay --redis`, `--workers`): clients held at 1x by one process vs two workers,
server CPU per client-second, broadcast latency through Redis beside in-process, Redis
traffic per broadcast, failover time. A real redis-server (Debian's) on a free port.

The machine has 2 cores and the load generator (lean WebSocket clients, bench/ws_client.py,
in 2 processes) shares them with the servers: "clients held" measures the machine, server
CPU per client-second measures the server (what a core buys, whatever generates load).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import RESULTS, ROOT, Report, header
from bench.ws_client import run_client
from recorder.config import SimConfig, parse_symbols
from recorder.record import RecordConfig, record
from tests.conftest import free_port

HELD = 0.95  # a client count is held when this share of the log's rate reaches the clients


def _record(path: Path, ticks: int, rate: float) -> None:
    record(RecordConfig(path=path, sim=SimConfig(seed=1, rate=rate,
                                                 symbols=parse_symbols("BTC-USD")),
                        ticks=ticks))


class _Server:
    def __init__(self, data: Path, port: int, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ticktape", "replay", str(data), "--port", str(port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if " at http://" not in line:
            raise RuntimeError(f"server did not start: {line}{self.proc.stdout.read()}")
        self.url = f"http://127.0.0.1:{port}"
        self.ps = psutil.Process(self.proc.pid)

    def processes(self) -> list[psutil.Process]:
        """The serving processes: the workers under a supervisor, else the process itself."""
        return self.ps.children() or [self.ps]

    def cpu(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self.processes())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.communicate(timeout=60)


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith(name + " "))


# -- (a) clients held at 1x ------------------------------------------------------------------
CROWD_CODE = """
import asyncio, json, sys, time
from bench.ws_client import many_clients
url, count, total, settle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
began = time.perf_counter()
got = asyncio.run(many_clients(url, count, {"log": "crowd", "speed": 1}, total))
lo, hi = began + settle, began + total - 1
print(json.dumps({"delivered": sum(r for g in got for w, _, r in g.arrivals if lo <= w < hi),
                  "receiving": sum(1 for g in got if any(lo <= w < hi for w, _, _ in g.arrivals)),
                  "window": hi - lo}))
"""


def _crowd(server: _Server, count: int, total: float = 14.0, settle: float = 6.0
           ) -> dict[str, float]:
    """`count` clients at 1x on their own streams (2 client processes); delivery and server
    CPU measured once all are connected."""
    procs = [subprocess.Popen([sys.executable, "-c", CROWD_CODE, server.url, str(n), str(total),
                               str(settle)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for n in (count // 2, count - count // 2)]
    time.sleep(settle)
    cpu0, t0 = server.cpu(), time.perf_counter()
    time.sleep(total - settle - 1)
    cpu1, t1 = server.cpu(), time.perf_counter()
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    busy = (cpu1 - cpu0) / (t1 - t0)
    delivered = sum(o["delivered"] for o in outs) / outs[0]["window"]
    return {"share": delivered / (count * 20.0), "receiving": sum(o["receiving"] for o in outs),
            "cpu": busy, "cpu_per_client_s": busy / count}


def _capacity(rep: Report, data: Path, redis_url: str, counts: list[int]
              ) -> dict[int, list[tuple[int, dict[str, float]]]]:
    runs: dict[int, list[tuple[int, dict[str, float]]]] = {1: [], 2: []}
    for workers in (1, 2):
        port = free_port()
        extra = ["--redis", redis_url] + (["--workers", "2"] if workers == 2 else [])
        server = _Server(data, port, *extra)
        try:
            time.sleep(1.0)
            for count in counts:
                got = _crowd(server, count)
                runs[workers].append((count, got))
                print(f"    {workers} worker(s), {count} clients: {got['share']:.1%} of the "
                      f"rate, {got['receiving']} receiving, server CPU {got['cpu']:.0%}",
                      flush=True)
                if got["share"] < HELD:
                    break
        finally:
            server.stop()
    held = {w: max([c for c, g in runs[w] if g["share"] >= HELD], default=0) for w in runs}
    rep.add("clients held at 1x, --workers 2", held[2], "clients", baseline=held[1] or None,
            baseline_name="one process, same machine", target=">= 1.6x")
    # Server CPU per client-second at each one's largest held count: an event loop with CPU
    # to spare wakes more often and does less per wake-up, so only a loaded server shows
    # what a client costs it.
    if held[1] and held[2]:
        loaded = {w: dict(runs[w])[held[w]]["cpu_per_client_s"] for w in (1, 2)}
        rep.add(f"server CPU per client-second, 2 workers at {held[2]} clients",
                loaded[2] * 1e3, "ms", baseline=loaded[1] * 1e3,
                baseline_name=f"one process at {held[1]} clients", higher_is_better=False)
    # Server CPU per client-second where both held the same count: what a worker costs.
    common = [c for c, g in runs[1] if g["share"] >= HELD and c in dict(runs[2])]
    if common:
        count = max(common)
        one, two = dict(runs[1])[count], dict(runs[2])[count]
        rep.add(f"server CPU per client-second, 2 workers ({count} clients)",
                two["cpu_per_client_s"] * 1e3, "ms", baseline=one["cpu_per_client_s"] * 1e3,
                baseline_name="one process, same clients", higher_is_better=False,
                target="~1x (workers add no cost)")
        rep.add("clients one core holds at 1x (from CPU per client-second)",
                1 / one["cpu_per_client_s"], "clients", baseline=held[1] or None,
                baseline_name="held by one process with the load generator on the machine",
                target="")
    return runs


# -- (b) broadcast latency, Redis traffic --------------------------------------------------------
def _late(arrivals: list[tuple[float, int, int]], speed: float, anchor: float) -> np.ndarray:
    wall = np.array([a[0] for a in arrivals])
    ts = np.array([a[1] for a in arrivals], dtype=np.int64)
    return (wall - anchor) - (ts - ts[0]) / 1e9 / speed


async def _pair(leader_url: str, follower_url: str, seconds: float
                ) -> tuple[Any, Any]:
    sub = {"log": "khz", "speed": 1, "mode": "broadcast"}
    first = asyncio.create_task(run_client(leader_url, sub, limit_s=seconds, keep_arrivals=True))
    await asyncio.sleep(0.3)  # the first joiner's process leads
    second = asyncio.create_task(run_client(follower_url, sub, limit_s=seconds - 0.3,
                                            keep_arrivals=True))
    return await first, await second


def _latency(rep: Report, data: Path, redis_url: str, seconds: float) -> None:
    single = _Server(data, free_port())
    try:
        time.sleep(0.5)
        got = asyncio.run(run_client(single.url, {"log": "khz", "speed": 1, "mode": "broadcast"},
                                     limit_s=seconds, keep_arrivals=True))
    finally:
        single.stop()
    if not got.arrivals:
        raise RuntimeError("the single-process broadcast delivered nothing")
    base = _late(got.arrivals, 1.0, 0.0)
    base -= base.min()
    a, b = _Server(data, free_port(), "--redis", redis_url), \
        _Server(data, free_port(), "--redis", redis_url)
    try:
        time.sleep(0.5)
        pub0, bytes0, t0 = (_metric(a.url, "ticktape_fleet_published_total"),
                            _metric(a.url, "ticktape_fleet_published_bytes_total"),
                            time.perf_counter())
        lead, follow = asyncio.run(_pair(a.url, b.url, seconds))
        pub1, bytes1, t1 = (_metric(a.url, "ticktape_fleet_published_total"),
                            _metric(a.url, "ticktape_fleet_published_bytes_total"),
                            time.perf_counter())
    finally:
        a.stop()
        b.stop()
    # Both clients on one clock: lateness against the schedule, anchored at the leader's
    # best batch; the follower's batches matched by their first ts (its join batch aside).
    led = {ts: w for w, ts, _ in lead.arrivals}
    ts0 = lead.arrivals[0][1]
    late_lead = np.array([w - (ts - ts0) / 1e9 for w, ts, _ in lead.arrivals])
    anchor = late_lead.min()
    late_lead -= anchor
    # The follower's first 2 s are its join (recent window, then what arrived meanwhile):
    # steady delivery only.
    steady = follow.arrivals[0][0] + 2.0
    late_follow = np.array([w - (ts - ts0) / 1e9 - anchor for w, ts, _ in follow.arrivals
                            if ts in led and w > steady])
    for q in (50, 99):
        rep.add(f"broadcast lateness p{q}, client on the leader (fleet)",
                float(np.percentile(late_lead, q)) * 1e3, "ms",
                baseline=float(np.percentile(base, q)) * 1e3,
                baseline_name="single process, no Redis", higher_is_better=False)
        rep.add(f"broadcast lateness p{q}, client through Redis",
                float(np.percentile(late_follow, q)) * 1e3, "ms",
                baseline=float(np.percentile(late_lead, q)) * 1e3,
                baseline_name="client on the leader, same batches", higher_is_better=False,
                target="p99 <= +5 ms" if q == 99 else "")
    span = t1 - t0
    rep.add("Redis messages/s per broadcast (1 kHz log, 1x)", (pub1 - pub0) / span, "msg/s",
            baseline=len(lead.arrivals) / seconds, baseline_name="batches a client receives/s")
    rep.add("Redis bytes/s per broadcast (1 kHz log, 1x)", (bytes1 - bytes0) / span, "B/s",
            baseline=1_000 * 33.0, baseline_name="raw ticks (33 B each) at 1 kHz",
            higher_is_better=False)


# -- (c) failover ----------------------------------------------------------------------------
def _failover(rep: Report, data: Path, redis_url: str) -> None:
    from tests.replay_helpers import Client

    a = _Server(data, free_port(), "--redis", redis_url)
    b = _Server(data, free_port(), "--redis", redis_url)

    async def run() -> tuple[list[int], float]:
        first, watcher = Client(), Client()
        arrivals: list[tuple[float, int]] = []
        watcher.sio.on("ticks", lambda d: (watcher.batches.append(d),
                                           arrivals.append((time.perf_counter(), d["seq"][0]))))
        try:
            await first.connect(a.url)
            await first.call("subscribe", {"log": "khz", "speed": 1, "mode": "broadcast"})
            await watcher.connect(b.url)
            await watcher.call("subscribe", {"log": "khz", "speed": 1, "mode": "broadcast"})
            await watcher.wait_ticks(3_000, 30)
            killed = time.perf_counter()
            a.proc.kill()
            await watcher.wait_ticks(len(watcher.seqs()) + 3_000, 30)
            # Batches the dead leader had already published can still arrive just after
            # the kill: the failover ends with the first batch after the longest silence.
            times = [w for w, _ in arrivals if w > killed]
            silence = np.diff([killed, *times])
            return watcher.seqs(), float(np.sum(silence[: int(np.argmax(silence)) + 1]))
        finally:
            await first.close()
            await watcher.close()

    try:
        seqs, gap = asyncio.run(run())
    finally:
        a.stop(signal.SIGKILL)
        b.stop()
    whole = seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    rep.add("failover: SIGKILL of the leader to the next batch", gap, "s", baseline=5.0,
            baseline_name="the contract's bound", higher_is_better=False,
            target="<= 5 s, no gap, no duplicate")
    rep.add(f"failover: seqs received across it exactly once ({'yes' if whole else 'NO'})",
            float(len(seqs)), "ticks", baseline=float(seqs[-1] - seqs[0] + 1),
            baseline_name="seq span received")


def _plot(runs: dict[int, list[tuple[int, dict[str, float]]]]) -> None:
    """Clients vs share of the log's rate delivered, per worker count: a self-contained HTML
    (plotly, bundle inlined: no CDN) in the results folder."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for workers, points in runs.items():
        fig.add_trace(go.Scatter(x=[c for c, _ in points], y=[g["share"] * 100 for _, g in points],
                                 mode="lines+markers", name=f"{workers} worker(s)"))
    fig.add_hline(y=HELD * 100, line_dash="dot", annotation_text="held")
    fig.update_layout(title="Clients at 1x vs workers (2 cores, load generator included)",
                      xaxis_title="clients (own streams, 20 ticks/s each)",
                      yaxis_title="% of the log's rate delivered")
    RESULTS.mkdir(parents=True, exist_ok=True)
    page = RESULTS / "fleet-clients.html"
    fig.write_html(page, include_plotlyjs=True)
    _png(page, RESULTS / "fleet-clients.png")


def _png(page: Path, png: Path) -> None:
    """The plot as PNG: the page rendered by headless Chromium (Playwright, already a dev
    dependency for the dashboard tests) rather than another image exporter."""
    import shutil as _shutil

    from playwright.sync_api import sync_playwright

    chromium = _shutil.which("chromium") or _shutil.which("chromium-browser")
    if chromium is None:
        print("  (no chromium: PNG not written; ./dev test installs it)", flush=True)
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            tab = browser.new_page(viewport={"width": 1000, "height": 600})
            tab.goto(page.as_uri())
            tab.wait_for_selector(".main-svg", timeout=30_000)
            tab.screenshot(path=str(png))
        finally:
            browser.close()


def run(quick: bool = False) -> Report:
    from tests.test_fleet import RedisServer

    rep = header("Fleet (servers in their own processes; Redis on this machine)")
    work = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    redis_server = RedisServer(work)
    try:
        data = work / "data"
        data.mkdir()
        _record(data / "crowd", 20_000, rate=20.0)
        seconds = 8.0 if quick else 20.0
        _record(data / "khz", int(seconds * 1_000) + 10_000, rate=1_000.0)
        _latency(rep, data, redis_server.url, seconds)
        _failover(rep, data, redis_server.url)
        runs = _capacity(rep, data, redis_server.url,
                         [200, 400] if quick else [400, 800, 1000, 1200, 1400, 1600, 1800, 2000,
                                                    2200, 2400, 2600, 2800, 3200])
        _plot(runs)
        print(f"  plot: {RESULTS / 'fleet-clients.png'} (and .html)", flush=True)
    finally:
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)
    rep.save()
    return rep

