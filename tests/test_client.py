"""ticktape.client against real servers: exact streams, errors, control, resume, giving up."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import socketio
from aiohttp import web

from analysis.streaming import IndicatorSpec, StreamingIndicators
from recorder.log import iso_ns
from replayer.config import ServerConfig
from tests.conftest import free_port, make_log
from tests.replay_helpers import (
    Served,
    ServerProcess,
    TcpProxy,
    assert_exactly_once,
    receive_all,
    serve_in_process,
    sma_close,
)
from ticktape.client import (
    Batch,
    Client,
    ConnectionLost,
    ServerError,
    StreamEnded,
    StreamError,
    connect,
)

TICKS = 20_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("client")
    make_log(data / "pair", ticks=TICKS, symbols="BTC-USD,ETH-USD", rate=200,
             segment_rows=7_000)
    make_log(data / "fast", ticks=4_000, rate=1_000)
    return data


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[Served]:
    async with serve_in_process(ServerConfig(path=data_dir, port=0, max_batch=1_000)) as s:
        yield s


class Consumer:
    """Iterates a subscription in a task, so the test can act while batches arrive."""

    def __init__(self, client: Client, log: str, **options: Any) -> None:
        self.batches: list[Batch] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(client.subscribe(log, **options)))

    async def _run(self, stream: AsyncIterator[Batch]) -> None:
        async for batch in stream:
            self.batches.append(batch)
            self.arrived.set()

    def seqs(self) -> list[int]:
        return [int(s) for b in self.batches for s in b.seq]

    async def wait_ticks(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seqs()) < count:
            assert not self.task.done(), self.task.exception()
            assert time.monotonic() < deadline, f"only {len(self.seqs())} of {count} arrived"
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.2)

    async def finish(self, timeout: float = 120) -> None:
        await asyncio.wait_for(self.task, timeout)


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs (first, last) of a seq list."""
    runs: list[tuple[int, int]] = []
    for s in seqs:
        if runs and s == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def _reference_sma(log: Path, n: int) -> np.ndarray:
    table = pq.read_table(log)
    out = StreamingIndicators(IndicatorSpec(sma=(n,))).update(
        table.column("symbol"), table.column("ts").cast(pa.int64()).to_numpy(),
        table.column("price").to_numpy())
    return out[f"sma_{n}"]


@pytest.mark.parametrize("encoding", ["json", "arrow"])
async def test_a_full_replay_is_the_log(served: Served, encoding: str) -> None:
    got = await receive_all(served.url, "pair", speed="max", sma=7, encoding=encoding)
    table = pq.read_table(served.data / "pair")
    assert_exactly_once(got.seqs(), 0, TICKS)
    assert got.info["events"] == TICKS and got.info["symbols"] == ["BTC-USD", "ETH-USD"]
    assert got.end == {"log": "pair", "last_seq": TICKS - 1}
    assert got.statuses[0]["state"] == "playing" and got.statuses[-1]["state"] == "ended"
    assert all(b.log == "pair" for b in got.batches)
    assert np.array_equal(np.concatenate([b.ts for b in got.batches]),
                          table.column("ts").cast(pa.int64()).to_numpy())
    assert got.column("price") == table.column("price").to_pylist()
    assert got.column("size") == table.column("size").to_pylist()
    assert got.column("symbol") == table.column("symbol").to_pylist()
    assert got.column("side") == table.column("side").to_pylist()
    sma_close([None if np.isnan(v) else v for v in got.column("sma")],
              _reference_sma(served.data / "pair", 7))
    arrow = pa.Table.from_batches([b.to_arrow() for b in got.batches])
    assert arrow.column("ts").equals(table.column("ts").cast(arrow.schema.field("ts").type))
    assert arrow.column("sma").null_count == int(np.isnan(got.column("sma")).sum()) > 0


async def test_from_seq_and_a_symbol_filter(served: Served) -> None:
    got = await receive_all(served.url, "pair", speed="max", from_seq=12_345)
    assert_exactly_once(got.seqs(), 12_345, TICKS)
    got = await receive_all(served.url, "pair", speed="max", symbols=["ETH-USD"])
    symbols = pq.read_table(served.data / "pair").column("symbol").to_pylist()
    assert got.seqs() == [i for i, s in enumerate(symbols) if s == "ETH-USD"]
    got = await receive_all(served.url, "pair", from_seq=TICKS)  # valid: ends at once
    assert got.batches == [] and got.end == {"log": "pair", "last_seq": TICKS - 1}


async def test_errors_are_typed_with_code_and_message(served: Served) -> None:
    async with connect(served.url) as c:
        with pytest.raises(ServerError) as caught:
            [b async for b in c.subscribe("../pair")]
        assert (caught.value.code, caught.value.message) == ("unknown_log",
                                                             "unknown log '../pair'")
        assert str(caught.value) == "server refused: unknown log '../pair' (unknown_log)"
        assert caught.value.exit_code == 2
        with pytest.raises(ServerError) as caught:
            [b async for b in c.subscribe("pair", speed=0)]
        assert caught.value.code == "bad_request" and "speed" in caught.value.message
        with pytest.raises(ServerError) as caught:
            await c.control("pause")
        assert caught.value.code == "not_allowed"
        assert sorted(info["name"] for info in await c.logs()) == ["fast", "pair"]
        assert (await c.log("fast"))["events"] == 4_000
        with pytest.raises(ServerError) as caught:
            await c.log("../pair")
        assert caught.value.code == "unknown_log"


async def test_a_token_protected_server(data_dir: Path) -> None:
    async with serve_in_process(ServerConfig(path=data_dir, port=0, token="s3cret")) as s:
        with pytest.raises(ServerError) as caught:
            async with connect(s.url):
                pass
        assert caught.value.code == "unauthorized"
        async with connect(s.url, token="s3cret") as c:
            assert len(await c.logs()) == 2
            seqs = [int(v) async for b in c.subscribe("fast", from_seq=3_990) for v in b.seq]
            assert seqs == list(range(3_990, 4_000))


async def test_pause_resume_seek_and_speed(served: Served) -> None:
    async with connect(served.url) as c:
        got = Consumer(c, "fast", speed=1)  # 4,000 events at 1 kHz: 4 s at 1x
        await got.wait_ticks(20)
        ack = await c.control("pause")
        assert ack["state"] == "paused"
        assert c.status is not None and c.status["state"] == "paused"
        await c.control("resume")
        await c.control("seek", seq=100)  # backwards: the one jump the iterator accepts
        await got.wait_ticks(len(got.seqs()) + 20)
        table = pq.read_table(served.data / "fast")
        ts = table.column("ts").cast(pa.int64()).to_numpy()
        ack = await c.control("seek", ts=iso_ns(int(ts[3_000])))
        assert ack["seq"] <= 3_000
        await c.control("speed", speed="max")
        await got.finish()
    runs = _runs(got.seqs())
    assert len(runs) == 3, runs
    assert runs[0][0] == 0 and runs[1][0] == 100 and runs[2] == (ack["seq"], 3_999)


async def test_resume_across_cut_connections(served: Served) -> None:
    proxy = TcpProxy(served.port)
    await proxy.start()
    try:
        async with connect(f"http://127.0.0.1:{proxy.port}") as c:
            got = Consumer(c, "pair", speed=20)  # 100 s of events: 5 s at 20x
            for cut_at in (2_000, 6_000, 11_000):
                await got.wait_ticks(cut_at)
                proxy.cut()  # the network drops: the client reconnects through the proxy
            await got.finish()
            assert c.reconnects == 3
        assert_exactly_once(got.seqs(), 0, TICKS)
    finally:
        await proxy.close()


async def test_resume_after_the_server_process_dies(data_dir: Path) -> None:
    port = free_port()
    server = ServerProcess(data_dir, port=port)
    try:
        async with connect(server.url) as c:
            got = Consumer(c, "pair", speed=20)
            await got.wait_ticks(5_000)
            server.kill()  # a crash, not a goodbye
            server = await asyncio.to_thread(ServerProcess, data_dir, port=port)
            await got.finish()
            assert c.reconnects >= 1
        assert_exactly_once(got.seqs(), 0, TICKS)
    finally:
        server.stop()


async def test_gives_up_after_the_reconnect_timeout(data_dir: Path) -> None:
    with ServerProcess(data_dir) as server:
        async with connect(server.url, reconnect_timeout=1.0) as c:
            got = Consumer(c, "pair", speed=20)
            await got.wait_ticks(100)
            lost = time.monotonic()
            server.kill()
            with pytest.raises(ConnectionLost) as caught:
                await got.finish(60)  # a hang guard, not a timing assertion
            assert time.monotonic() - lost >= 1.0
        assert str(caught.value).startswith(
            f"lost the connection to {server.url} (the connection dropped) and could not "
            f"reconnect within 1 s: cannot connect to {server.url}")
        assert caught.value.exit_code == 1
        assert_exactly_once(got.seqs(), 0, len(got.seqs()))


async def test_a_server_shutdown_is_named_when_it_does_not_come_back(data_dir: Path) -> None:
    with ServerProcess(data_dir) as server:
        async with connect(server.url, reconnect_timeout=1.0) as c:
            got = Consumer(c, "pair", speed=1)
            await got.wait_ticks(10)
            code, out = await asyncio.to_thread(server.stop, signal.SIGTERM)
            assert code == 0, out
            with pytest.raises(ConnectionLost, match=r"\(the server shut down\)"):
                await got.finish(60)
            assert c.statuses[-1]["state"] == "ended"
            assert c.statuses[-1]["reason"] == "shutdown"


async def test_a_stream_the_server_ends_with_an_error_raises(tmp_path: Path) -> None:
    make_log(tmp_path / "gone", ticks=5_000, rate=50, segment_rows=1_000)
    async with serve_in_process(ServerConfig(path=tmp_path, port=0)) as served, \
            connect(served.url) as c:
        got = Consumer(c, "gone", speed=1)
        await got.wait_ticks(1)
        for late in ("seg-000000003000.parquet", "seg-000000004000.parquet"):
            (tmp_path / "gone" / late).unlink()  # the log breaks under the running stream
        await c.control("speed", speed="max")
        with pytest.raises(StreamEnded) as caught:
            await got.finish(60)
        assert caught.value.reason.startswith("error: ")
        assert str(caught.value).startswith("the server ended the stream: error: ")
        assert_exactly_once(got.seqs(), 0, len(got.seqs()))


@pytest.mark.parametrize("second, expected", [
    ([3, 4], "stream of bad is not contiguous: expected seq 2, got 3..4 (2 ticks)"),
    ([2, 4], "stream of bad is not contiguous: expected seq 2, got 2..4 (2 ticks)"),
    ([1, 2], "stream of bad is not contiguous: expected seq 2, got 1..2 (2 ticks)"),
    ([], "stream ended at seq 4 but the last seq received was 1"),
])
async def test_a_gap_or_repeat_is_an_error(second: list[int], expected: str) -> None:
    """A real Socket.IO server that breaks the protocol on purpose: the client must notice."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)

    def ticks(seqs: list[int]) -> dict[str, Any]:
        n = len(seqs)
        return {"log": "bad", "seq": seqs, "ts": [10**18 + s for s in seqs],
                "symbol": ["X"] * n, "price": [1.0] * n, "size": [1.0] * n,
                "side": ["buy"] * n, "sma": [None] * n}

    async def play(sid: str) -> None:
        await sio.emit("ticks", ticks([0, 1]), to=sid)
        if second:
            await sio.emit("ticks", ticks(second), to=sid)
        await sio.emit("end", {"log": "bad", "last_seq": 4}, to=sid)

    async def subscribe(sid: str, payload: Any) -> dict[str, Any]:
        sio.start_background_task(play, sid)
        return {"ok": True, "log": {"name": "bad", "events": 5}}

    sio.on("subscribe", subscribe)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with connect(f"http://127.0.0.1:{runner.addresses[0][1]}") as c:
            got: list[Batch] = []
            with pytest.raises(StreamError) as caught:
                async for batch in c.subscribe("bad", speed="max"):
                    got.append(batch)
            assert str(caught.value) == expected and caught.value.exit_code == 1
            assert [int(s) for b in got for s in b.seq] == [0, 1]
    finally:
        await runner.cleanup()
