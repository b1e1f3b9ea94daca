"""`ticktape watch` as users run it, against real servers: record, refuse, reconnect, give up."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recorder.log import JOURNAL, Log
from replayer.config import ServerConfig
from tests.conftest import make_log, run_cli
from tests.replay_helpers import ServerProcess, TcpProxy, serve_in_process

EVENTS = 40_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("watch")
    make_log(data / "pair", ticks=EVENTS, symbols="BTC-USD,ETH-USD", rate=200,
             segment_rows=15_000)
    return data


@pytest.fixture(scope="module")
def server(data_dir: Path) -> object:
    with ServerProcess(data_dir) as proc:
        yield proc


def _watch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ticktape", "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_lines(proc: subprocess.Popen[str], count: int) -> None:
    """Block until `watch` has printed `count` tick lines (it fails the test if it exits)."""
    assert proc.stdout is not None
    for _ in range(count):
        assert proc.stdout.readline(), f"watch exited early: {proc.communicate()}"


def _ticks_sent(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return next(float(line.split()[1]) for line in text.splitlines()
                if line.startswith("ticktape_ticks_sent_total "))


def _same_events(copy: Path, source: Path) -> None:
    want = pq.read_table(source)
    assert pq.read_table(copy).select(want.column_names).equals(want)


def test_watch_record_round_trip(data_dir: Path, tmp_path: Path, server: ServerProcess) -> None:
    for encoding in ("json", "arrow"):
        out = tmp_path / f"copy-{encoding}"
        result = run_cli("watch", server.url, "--log", "pair", "--speed", "max",
                         "--encoding", encoding, "--record", str(out), "--quiet")
        assert result.returncode == 0, result.stderr
        assert result.stderr == f"recorded {EVENTS:,} events into {out}\n"
        assert run_cli("verify", str(out)).returncode == 0
        _same_events(out, data_dir / "pair")
        assert Log(out).metadata["source"] == f"watch:{server.url}"
    result = run_cli("watch", server.url, "--log", "pair", "--speed", "max", "--json",
                     "--symbols", "ETH-USD")
    lines = result.stdout.splitlines()
    source = pq.read_table(data_dir / "pair")
    eth = sum(1 for s in source.column("symbol").to_pylist() if s == "ETH-USD")
    assert result.returncode == 0 and len(lines) == eth
    first = json.loads(lines[0])
    assert first["symbol"] == "ETH-USD" and first["ts"].endswith("Z") and first["sma"] is None
    bad = run_cli("watch", server.url, "--log", "../pair")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: server refused: unknown log '../pair' (unknown_log)"


def test_record_onto_an_existing_log_is_refused_before_subscribing(
        data_dir: Path, tmp_path: Path, server: ServerProcess) -> None:
    out = make_log(tmp_path / "out", ticks=100)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    sent = _ticks_sent(server.url)
    result = run_cli("watch", server.url, "--log", "pair", "--speed", "max", "--record",
                     str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: log {out} exists; pass --overwrite to replace it\n"
    assert result.stdout == ""
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _ticks_sent(server.url) == sent  # no stream was started
    result = run_cli("watch", server.url, "--log", "pair", "--speed", "max", "--record",
                     str(out), "--overwrite", "--quiet")
    assert result.returncode == 0, result.stderr
    _same_events(out, data_dir / "pair")


def test_a_writer_error_fails_watch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_log(data / "slow", ticks=3_000, rate=100)  # 30 s of events: 3 s at 10x
    server = ServerProcess(data)
    out = tmp_path / "copy"
    proc = _watch(server.url, "--log", "slow", "--speed", "10", "--record", str(out))
    try:
        _read_lines(proc, 1)
        deadline = time.monotonic() + 30
        while not (out / JOURNAL).exists():  # the first batch is journaled
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        # Sealing at the end must now fail: its segment's name is taken by a directory.
        (out / "seg-000000000000.parquet").mkdir()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert err.startswith(f"error: cannot record into {out}: "), err
        assert err.count("\n") == 1 and "recorded" not in err
    finally:
        proc.kill()
        proc.communicate()
        server.stop()


def test_gives_up_reconnecting_after_the_bound(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    proc = _watch(server.url, "--log", "pair", "--speed", "20", "--reconnect-timeout", "2")
    try:
        _read_lines(proc, 200)
        server.kill()  # a crash, and nobody restarts it
        _, err = proc.communicate(timeout=60)  # a hang guard, not a timing assertion
        assert proc.returncode == 1, err
        assert err.startswith(f"error: lost the connection to {server.url} (the connection "
                              f"dropped) and could not reconnect within 2 s: cannot connect to "
                              f"{server.url}"), err
        assert err.count("\n") == 1
    finally:
        proc.kill()
        proc.communicate()
        server.stop()


async def test_record_is_exact_across_forced_reconnects(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    async with serve_in_process(ServerConfig(path=data_dir, port=0, max_batch=500)) as served:
        proxy = TcpProxy(served.port)
        await proxy.start()
        url = f"http://127.0.0.1:{proxy.port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ticktape", "watch", url, "--log", "pair", "--speed", "50",
            "--record", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            printed = 0
            for cut_at in (3_000, 15_000):
                while printed < cut_at:
                    assert await asyncio.wait_for(proc.stdout.readline(), 60), "watch exited"
                    printed += 1
                proxy.cut()  # the network drops mid-stream; watch reconnects through the proxy
            rest, err = await asyncio.wait_for(proc.communicate(), 120)
            printed += len(rest.splitlines())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proxy.close()
    assert proc.returncode == 0, err
    assert proxy.connections >= 3  # the first connection and one after each cut
    assert printed == EVENTS
    _same_events(out, data_dir / "pair")
