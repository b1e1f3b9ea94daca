"""The server as its own process: SIGTERM, restart mid-stream, follow a live recorder,
a client that never reads, and bad `replay`/`watch` arguments (`watch` itself: test_watch.py)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from recorder.log import JOURNAL, Log
from replayer.config import ServerConfig
from tests.conftest import free_port, make_log, run_cli
from tests.replay_helpers import Client, ServerProcess, assert_exactly_once, serve_in_process


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("proc")
    make_log(data / "pair", ticks=40_000, symbols="BTC-USD,ETH-USD", rate=200,
             segment_rows=15_000)
    make_log(data / "big", ticks=1_500_000, rate=1_000)
    return data


async def test_sigterm_ends_streams_and_exits_zero(data_dir: Path) -> None:
    server = ServerProcess(data_dir)
    c = Client()
    try:
        await c.connect(server.url)
        assert (await c.call("subscribe", {"log": "pair", "speed": 1}))["ok"]
        await c.wait_ticks(10)
        code, out = await asyncio.to_thread(server.stop, signal.SIGTERM)
        assert code == 0, out
        deadline = time.monotonic() + 10
        while not any(s.get("reason") == "shutdown" for s in c.statuses):
            assert time.monotonic() < deadline, c.statuses
            await asyncio.sleep(0.05)
        assert c.statuses[-1]["state"] == "ended"
    finally:
        await c.close()
        server.stop(signal.SIGKILL)


async def test_server_restart_mid_stream_client_resumes(data_dir: Path) -> None:
    port = free_port()
    server = ServerProcess(data_dir, port=port)
    c = Client()
    connects: list[int] = []

    async def resubscribe() -> None:
        seqs = c.seqs()
        connects.append(seqs[-1] + 1 if seqs else 0)
        await c.call("subscribe", {"log": "pair", "speed": 20, "from_seq": connects[-1]})

    c.sio.on("connect", lambda: asyncio.get_running_loop().create_task(resubscribe()))
    try:
        await c.connect(server.url)
        await c.wait_ticks(5_000, 60)
        server.kill()  # a crash, not a goodbye (kill() waits until the process is gone)
        server = ServerProcess(data_dir, port=port)
        await c.wait_end(120)
        assert len(connects) >= 2 and connects[1] > 0
        assert_exactly_once(c.seqs(), 0, 40_000)
    finally:
        await c.close()
        server.stop()


async def test_follow_a_log_while_it_is_recorded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    flush = 0.2
    recorder = subprocess.Popen(
        [sys.executable, "-m", "ticktape", "record", str(data / "live"), "--realtime",
         "--rate", "200", "--flush-interval", str(flush), "--seed", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    c = Client()
    try:
        deadline = time.monotonic() + 20
        while not (data / "live" / JOURNAL).exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        async with serve_in_process(ServerConfig(path=data, port=0)) as served:
            await c.connect(served.url)
            ack = await c.call("subscribe", {"log": "live", "speed": 1})
            assert ack["ok"] and ack["log"]["live"] is True
            # Events recorded after the subscribe arrive while the recorder still runs.
            await c.wait_ticks(ack["log"]["events"] + 100, 60)
            assert recorder.poll() is None
            recorder.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(recorder.wait, 20) == 0
            await c.wait_end(20)
        events = Log(data / "live").events
        assert_exactly_once(c.seqs(), 0, events)
        assert c.ends[0]["last_seq"] == events - 1
    finally:
        await c.close()
        if recorder.poll() is None:
            recorder.kill()
        recorder.stderr.close()  # type: ignore[union-attr]


def _ws_frame(text: str) -> bytes:
    """A masked WebSocket text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    header += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_until(sock: socket.socket, marker: bytes) -> None:
    received = b""
    while marker not in received:
        data = sock.recv(65_536)
        assert data, f"connection closed before {marker!r}: {received[:200]!r}"
        received += data


def _never_reading_client(port: int, log: str) -> socket.socket:
    """Engine.IO + Socket.IO handshake by hand, subscribe at max, then never read again."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)  # a deadline per read
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    _read_until(sock, b"0{")  # 101 Switching Protocols, then the Engine.IO open packet
    sock.sendall(_ws_frame("40"))
    _read_until(sock, b"40{")  # Socket.IO connect acknowledgement
    sock.sendall(_ws_frame(f'421["subscribe",{{"log":"{log}","speed":"max"}}]'))
    return sock


async def _full_replay(url: str, log: str, events: int) -> None:
    other = Client()
    try:
        await other.connect(url)
        assert (await other.call("subscribe", {"log": log, "speed": "max"}))["ok"]
        await other.wait_end(60)
        assert_exactly_once(other.seqs(), 0, events)
    finally:
        await other.close()


async def _metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


async def test_a_client_that_never_reads_costs_bounded_memory(data_dir: Path) -> None:
    server = ServerProcess(data_dir, "--window", "4")
    rss = psutil.Process(server.proc.pid)
    stuck = None
    try:
        await _full_replay(server.url, "pair", 40_000)  # warm the server up first
        before = rss.memory_info().rss
        stuck = await asyncio.to_thread(_never_reading_client, server.port, "big")
        # Wait until its stream stalls: its transport holds a full window of batches.
        deadline = time.monotonic() + 60
        while (await _metrics(server.url))["ticktape_queue_depth"] < 4:
            assert time.monotonic() < deadline, "the stuck client's queue never filled"
            await asyncio.sleep(0.05)
        # Meanwhile another client still gets a full replay at full speed.
        await _full_replay(server.url, "pair", 40_000)
        grown = (rss.memory_info().rss - before) / 2**20
        values = await _metrics(server.url)
        assert values["ticktape_backpressure_waits_total"] >= 1
        assert values["ticktape_queue_depth"] <= 4
        sent_to_stuck = values["ticktape_ticks_sent_total"] - 2 * 40_000
        assert sent_to_stuck < 1_500_000  # it stalled instead of queueing the whole log
        assert grown < 50, f"server grew {grown:.1f} MiB with a client that never reads"
    finally:
        if stuck is not None:
            stuck.close()
        server.stop()


def test_replay_and_watch_bad_arguments(tmp_path: Path) -> None:
    result = run_cli("replay", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no such file or directory: {tmp_path / 'nope'}"
    result = run_cli("replay", str(tmp_path), "--port", "70000")
    assert result.returncode == 2 and "--port must be within" in result.stderr
    result = run_cli("watch", "ftp://x", "--log", "a")
    assert result.returncode == 2 and "must start with http://" in result.stderr
    result = run_cli("watch", f"http://127.0.0.1:{free_port()}", "--log", "a")
    assert result.returncode == 2 and "cannot connect" in result.stderr
    result = run_cli("watch", "http://127.0.0.1:1", "--log", "a", "--speed", "0")
    assert result.returncode == 2 and "speed must be within" in result.stderr
