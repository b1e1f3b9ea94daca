"""Replayer: throughput to one client (JSON, arrow) beside a bare python-socketio loop; many
clients at 1x; lateness and drift at 1x on a 1 kHz log; server RSS on a 50M-tick log and with
a client that never reads. Throughput and crowd figures use the lean WebSocket client
(bench/ws_client.py) so they measure the server; lateness uses ticktape.client."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import ROOT, Report, header
from bench.ws_client import many_clients, run_client
from recorder.config import SimConfig, parse_symbols
from recorder.record import RecordConfig, record
from tests.conftest import free_port
from ticktape.client import connect


def _record(path: Path, ticks: int, rate: float = 20.0) -> Path:
    record(RecordConfig(path=path, sim=SimConfig(seed=1, rate=rate,
                                                 symbols=parse_symbols("BTC-USD")),
                        ticks=ticks))
    return path


class _Proc:
    def __init__(self, args: list[str], ready: str) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if ready not in line:
            raise RuntimeError(f"server did not start: {line}{self.proc.stdout.read()}")
        self.ps = psutil.Process(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


def _ticktape(path: Path, port: int) -> _Proc:
    return _Proc([sys.executable, "-m", "ticktape", "replay", str(path), "--port", str(port)],
                 " at http://")


def _max_speed(url: str, log: str, encoding: str) -> float:
    began = time.perf_counter()
    got = asyncio.run(run_client(url, {"log": log, "speed": "max", "encoding": encoding}))
    return got.ticks / (time.perf_counter() - began)


async def _arrivals(url: str, log: str) -> list[tuple[float, int]]:
    """(wall, first ts) of every batch of a 1x replay, through the project's own client, which
    also checks the stream is whole (every seq once, in order)."""
    arrivals: list[tuple[float, int]] = []
    async with connect(url) as client:
        async for batch in client.subscribe(log, speed=1):
            arrivals.append((time.perf_counter(), int(batch.ts[0])))
    return arrivals


def _lateness(url: str, log: str) -> tuple[np.ndarray, float]:
    arrivals = asyncio.run(_arrivals(url, log))
    wall = np.array([a[0] for a in arrivals])
    ts = np.array([a[1] for a in arrivals], dtype=np.int64)
    # Lateness relative to the schedule anchored at the first arrival (includes the network).
    late = (wall - wall[0]) - (ts - ts[0]) / 1e9
    late -= late.min()
    drift = float(late[-50:].mean() - late[:50].mean())
    return late, drift


async def _naive_sleep_drift(ts: np.ndarray) -> float:
    """Baseline scheduler: relative sleeps between ticks, as a tutorial paces a replay."""
    began = time.perf_counter()
    gaps = np.diff(ts) / 1e9
    for gap in gaps:
        await asyncio.sleep(gap)
    return (time.perf_counter() - began) - (ts[-1] - ts[0]) / 1e9


class _CpuSampler:
    """Server CPU seconds per wall second between two instants (process, all threads)."""

    def __init__(self, ps: psutil.Process, start: float, stop: float) -> None:
        self.ps, self.start, self.stop = ps, start, stop
        self.busy = 0.0

    async def run(self) -> None:
        await asyncio.sleep(max(0.0, self.start - time.perf_counter()))
        t0 = self.ps.cpu_times()
        await asyncio.sleep(max(0.0, self.stop - time.perf_counter()))
        t1 = self.ps.cpu_times()
        self.busy = (t1.user + t1.system - t0.user - t0.system) / (self.stop - self.start)


async def _with_sampler(sampler: _CpuSampler, work):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(sampler.run())
    result = await work
    await task
    return result


def run(quick: bool = False) -> Report:
    rep = header("Replayer (server in its own process; lean WebSocket clients)")
    work = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    try:
        data = work / "data"
        data.mkdir()
        n_tp = 500_000 if quick else 3_000_000
        _record(data / "tp", n_tp)
        port = free_port()
        server = _ticktape(data, port)
        url = f"http://127.0.0.1:{port}"
        bare_port = free_port()
        bare = _Proc([sys.executable, "-m", "bench.bare_server", str(data / "tp"),
                      str(bare_port), "5000"], "ready")
        bare_url = f"http://127.0.0.1:{bare_port}"
        try:
            time.sleep(0.5)
            for encoding in ("json", "arrow"):
                ours = _max_speed(url, "tp", encoding)
                base = _max_speed(bare_url, "bare", encoding)
                target = ">= 1M/s, >= 0.6x" if encoding == "json" else ">= 5M/s, >= 0.6x"
                rep.add(f"max speed to one client ({encoding})", ours, "ticks/s", baseline=base,
                        baseline_name="bare python-socketio emit loop", target=target)
        finally:
            bare.stop()
            server.stop()

        # (b) many clients at 1x on one worker: delivery measured once all are connected.
        _record(data / "crowd", 40_000, rate=20.0)
        server = _ticktape(data, port)
        try:
            for count in ([100] if quick else [100, 1_000]):
                for mode in ("stream", "broadcast"):
                    total, settle = 16.0, 6.0
                    began = time.perf_counter()
                    sampler = _CpuSampler(server.ps, began + settle, began + total - 1)
                    got = asyncio.run(_with_sampler(sampler, many_clients(
                        url, count, {"log": "crowd", "speed": 1, "mode": mode}, total)))
                    lo, hi = began + settle, began + total - 1
                    window = hi - lo
                    delivered = sum(r for g in got for w, _, r in g.arrivals if lo <= w < hi)
                    receiving = sum(1 for g in got if any(lo <= w < hi for w, _, _ in g.arrivals))
                    rep.add(f"{count} clients at 1x ({mode}): ticks/s delivered",
                            delivered / window, "ticks/s", baseline=count * 20.0,
                            baseline_name="log rate x clients", target="all served")
                    rep.add(f"{count} clients at 1x ({mode}): clients receiving", receiving,
                            "clients", baseline=count, baseline_name="clients started")
                    rep.add(f"{count} clients at 1x ({mode}): server CPU",
                            sampler.busy * 100, "% of a core", target="one worker")
        finally:
            server.stop()

        # (c) lateness and drift at 1x on a 1 kHz log.
        seconds = 10 if quick else 30
        _record(data / "khz", seconds * 1_000, rate=1_000.0)
        server = _ticktape(data, port)
        try:
            late, drift = _lateness(url, "khz")
        finally:
            server.stop()
        import pyarrow as pa

        from recorder.log import Log

        ts = np.concatenate([b.column(1).cast(pa.int64()).to_numpy()
                             for b in Log(data / "khz").iter_batches()])
        naive = asyncio.run(_naive_sleep_drift(ts[: min(len(ts), 5_000)]))
        naive_per_30s = naive * (30_000 / min(len(ts), 5_000))
        rep.add("1 kHz at 1x: lateness p50", float(np.percentile(late, 50)) * 1e3, "ms")
        rep.add("1 kHz at 1x: lateness p99", float(np.percentile(late, 99)) * 1e3, "ms",
                target="<= 2 ms")
        rep.add("1 kHz at 1x: lateness max", float(late.max()) * 1e3, "ms")
        rep.add(f"1 kHz at 1x: drift over {seconds} s", abs(drift) * 1e3, "ms",
                baseline=abs(naive_per_30s) * 1e3 * seconds / 30,
                baseline_name="relative asyncio.sleep per tick", higher_is_better=False,
                target="<= 1 ms")

        # (d) server RSS on a 50M-tick log, and with a client that never reads.
        n_big = 2_000_000 if quick else 50_000_000
        _record(data / "big", n_big, rate=1_000.0)
        server = _ticktape(data, port)
        try:
            time.sleep(0.5)
            idle = server.ps.memory_info().rss / 2**20
            peak = idle
            began = time.perf_counter()

            async def replay_and_sample() -> int:
                nonlocal peak
                task = asyncio.create_task(run_client(url, {"log": "big", "speed": "max",
                                                            "encoding": "arrow"}))
                while not task.done():
                    peak = max(peak, server.ps.memory_info().rss / 2**20)
                    await asyncio.sleep(0.2)
                return (await task).ticks

            ticks = asyncio.run(replay_and_sample())
            rep.add(f"server peak RSS replaying {ticks:,} ticks", peak, "MB", baseline=idle,
                    baseline_name="same server idle", higher_is_better=False,
                    target="<= 500 MB")
            rep.add(f"replay of {ticks:,} ticks (arrow, max)",
                    ticks / (time.perf_counter() - began), "ticks/s")
            from tests.test_replayer_process import _never_reading_client

            before = server.ps.memory_info().rss / 2**20
            stuck = _never_reading_client(port, "big")
            worst = before
            for _ in range(50):
                time.sleep(0.2)
                worst = max(worst, server.ps.memory_info().rss / 2**20)
            stuck.close()
            rep.add("server RSS with a client that never reads (10 s)", worst, "MB",
                    baseline=before, baseline_name="before it connected",
                    higher_is_better=False, target="<= +50 MB")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.save()
    return rep
