"""Real logs replay unchanged: trade_id and venue carried through to clients, and a live
feed's log followed while it is recorded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recorder.errors import TicktapeError
from recorder.log import SCHEMA, Log, LogWriter, make_batch
from replayer.config import ServerConfig
from tests.conftest import make_log
from tests.feed_servers import Tape, start_exchange
from tests.replay_helpers import serve_in_process
from ticktape.client import connect

N = 5_000


def _real_log(path: Path) -> pa.Table:
    rng = np.random.default_rng(11)
    seq = np.arange(N, dtype=np.int64)
    ts = 1_735_689_600_000_000_000 + np.cumsum(rng.integers(1, 10**7, N))
    base = make_batch(seq, ts, pa.array(rng.choice(["BTC-USDT", "ETH-USDT"], N)),
                      90_000 + rng.random(N), rng.random(N) + 0.01,
                      pa.array(rng.choice(["buy", "sell"], N)))
    batch = pa.RecordBatch.from_arrays(
        [*base.columns, pa.array([str(7_000_000 + i) for i in range(N)]),
         pa.array(rng.choice(["binance", "bybit"], N))],
        names=[*SCHEMA.names, "trade_id", "venue"])
    with LogWriter(path, {"source": "import:test"}, segment_rows=2_000,
                   optional_columns=("trade_id", "venue")) as writer:
        writer.append(batch)
    return pa.Table.from_batches([batch])


@pytest.mark.parametrize("encoding", ["json", "arrow"])
async def test_trade_id_and_venue_reach_clients(tmp_path: Path, encoding: str) -> None:
    data = tmp_path / "data"
    want = _real_log(data / "real")
    make_log(data / "sim", ticks=1_000)
    async with serve_in_process(ServerConfig(path=data, port=0)) as served, \
            connect(served.url) as client:
        got = [b async for b in client.subscribe("real", speed="max", encoding=encoding)]
        assert [s for b in got for s in b.seq.tolist()] == list(range(N))
        assert [t for b in got for t in b.trade_id or []] == want.column("trade_id").to_pylist()
        assert [v for b in got for v in b.venue or []] == want.column("venue").to_pylist()
        table = pa.Table.from_batches([b.to_arrow() for b in got])
        assert table.schema.names[-2:] == ["trade_id", "venue"]
        # A simulated log has neither column: its payload is unchanged.
        sim = [b async for b in client.subscribe("sim", speed="max", encoding=encoding)]
        assert all(b.trade_id is None and b.venue is None for b in sim)


async def test_a_live_feed_log_is_followed_while_it_is_recorded(tmp_path: Path) -> None:
    exchange, stop_exchange = start_exchange("binance")
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticktape", "record", str(data / "live"), "--feed", "binance",
         "--symbols", "BTCUSDT", "--feed-url", exchange.ws_url, "--rest-url", exchange.rest_url,
         "--flush-interval", "0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(exchange.wait, lambda e: e.subscriptions >= 1)
        tape = Tape("binance")
        first = tape.take(30, only=0)
        exchange.publish(first)

        def visible() -> int:
            try:
                return Log(data / "live").events
            except TicktapeError:
                return 0

        for _ in range(600):  # deadline: 30 s
            if visible() >= len(first):
                break
            await asyncio.sleep(0.05)
        assert visible() >= len(first)
        async with serve_in_process(ServerConfig(path=data, port=0)) as served, \
                connect(served.url) as client:
            ids: list[str] = []
            later = tape.take(20, only=0)
            async for batch in client.subscribe("live", speed="max"):
                ids += batch.trade_id or []
                if len(ids) == len(first):  # caught up with the log: the exchange trades on
                    exchange.publish(later)
                if len(ids) == len(first) + len(later):
                    break
            assert ids == [str(t.trade_id) for t in first + later]
            assert client.info is not None and client.info["live"] is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        stop_exchange()


async def test_metrics_report_the_trade_id_gaps_of_served_logs(tmp_path: Path) -> None:
    import aiohttp

    data = tmp_path / "data"
    n = 100
    seq = np.arange(n, dtype=np.int64)
    batch = make_batch(seq, 1_735_689_600_000_000_000 + seq, pa.array(["BTC-USDT"] * n),
                       np.full(n, 90_000.0), np.ones(n), pa.array(["buy"] * n))
    with LogWriter(data / "holed", {"source": "live:binance"}, segment_rows=50) as writer:
        writer.segment_notes = {"gaps": [
            {"symbol": "BTC-USDT", "first_id": 10, "last_id": 14, "count": 5, "cause": "skip",
             "backfilled": 2, "missing": [[12, 14]]}]}
        writer.append(batch.slice(0, 50))
        writer.segment_notes = {"gaps": [
            {"symbol": "BTC-USDT", "first_id": 90, "last_id": 90, "count": 1, "cause": "reconnect",
             "backfilled": 1, "missing": []}]}
        writer.append(batch.slice(50))
    make_log(data / "sim", ticks=100)
    async with serve_in_process(ServerConfig(path=data, port=0)) as served, \
            aiohttp.ClientSession() as http, http.get(f"{served.url}/metrics") as resp:
        text = await resp.text()
    assert 'ticktape_log_trade_id_gaps{log="holed"} 2.0' in text
    assert 'ticktape_log_missing_trades{log="holed"} 3.0' in text
    assert 'log="sim"' not in text  # a log without gaps adds no series
