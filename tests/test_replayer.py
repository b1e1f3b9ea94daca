"""The replay server in-process on 127.0.0.1:0, driven by real python-socketio clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import socketio

from analysis.streaming import IndicatorSpec, StreamingIndicators
from recorder.log import iso_ns
from replayer.config import ServerConfig
from tests.conftest import make_log
from tests.log_damage import rot_column
from tests.replay_helpers import (
    Client,
    Served,
    TcpProxy,
    assert_exactly_once,
    serve_in_process,
    sma_close,
)

TICKS = 20_000
LONG = 400_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("served")
    make_log(data / "pair", ticks=TICKS, symbols="BTC-USD,ETH-USD", rate=200,
             segment_rows=7_000)
    make_log(data / "fast", ticks=4_000, rate=1_000)
    # 400 s of events: at "max" a stream runs far ahead of where it started.
    make_log(data / "long", ticks=LONG, rate=1_000)
    return data


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[Served]:
    async with serve_in_process(ServerConfig(path=data_dir, port=0, max_batch=1_000)) as s:
        yield s


@pytest.fixture
async def client(served: Served) -> AsyncIterator[Client]:
    c = Client()
    await c.connect(served.url)
    try:
        yield c
    finally:
        await c.close()


def _reference_sma(log: Path, n: int) -> np.ndarray:
    table = pq.read_table(log)
    out = StreamingIndicators(IndicatorSpec(sma=(n,))).update(
        table.column("symbol"), table.column("ts").cast(pa.int64()).to_numpy(),
        table.column("price").to_numpy())
    return out[f"sma_{n}"]


async def test_full_replay_at_max_is_exact(served: Served, client: Client) -> None:
    ack = await client.call("subscribe", {"log": "pair", "speed": "max", "sma": 7})
    assert ack["ok"] and ack["log"]["events"] == TICKS and ack["log"]["last_seq"] == TICKS - 1
    assert ack["log"]["symbols"] == ["BTC-USD", "ETH-USD"] and ack["log"]["path"] is None
    await client.wait_end()
    assert_exactly_once(client.seqs(), 0, TICKS)
    assert client.ends == [{"log": "pair", "last_seq": TICKS - 1}]
    table = pq.read_table(served.data / "pair")
    assert client.column("price") == table.column("price").to_pylist()
    assert client.column("symbol") == table.column("symbol").to_pylist()
    assert client.column("ts") == table.column("ts").cast(pa.int64()).to_pylist()
    sma_close(client.column("sma"), _reference_sma(served.data / "pair", 7))
    assert all(b["log"] == "pair" for b in client.batches)
    assert max(len(b["seq"]) for b in client.batches) <= 1_000  # batched, capped
    assert client.statuses[0]["state"] == "playing" and client.statuses[-1]["state"] == "ended"


async def test_from_seq_resumes_with_the_same_sma(served: Served, client: Client) -> None:
    ack = await client.call("subscribe", {"log": "pair", "speed": "max", "from_seq": 12_345,
                                          "sma": 20})
    assert ack["ok"]
    await client.wait_end()
    assert_exactly_once(client.seqs(), 12_345, TICKS)
    sma_close(client.column("sma"), _reference_sma(served.data / "pair", 20)[12_345:])


async def test_from_seq_at_the_end_ends_at_once(client: Client) -> None:
    assert (await client.call("subscribe", {"log": "pair", "from_seq": TICKS}))["ok"]
    await client.wait_end(10)
    assert client.seqs() == [] and client.ends[0]["last_seq"] == TICKS - 1
    bad = await client.call("subscribe", {"log": "pair", "from_seq": TICKS + 1})
    assert bad["error"]["code"] == "bad_request"


async def test_paced_replay_follows_the_clock(client: Client) -> None:
    # "fast": 4,000 events at 1,000/s = ~4 s of event time; at 8x ~0.5 s of wall time.
    began = time.monotonic()
    assert (await client.call("subscribe", {"log": "fast", "speed": 8}))["ok"]
    await client.wait_end(30)
    elapsed = time.monotonic() - began
    ts = client.column("ts")
    span = (ts[-1] - ts[0]) / 1e9 / 8
    assert elapsed >= span * 0.8  # pacing never runs ahead (no upper bound: machines stall)
    assert len(client.batches) > 10  # paced, so it arrived in many batches
    assert_exactly_once(client.seqs(), 0, 4_000)


async def test_pause_resume_speed_and_seek(served: Served, client: Client) -> None:
    assert (await client.call("subscribe", {"log": "fast", "speed": 1}))["ok"]
    await client.wait_ticks(20)
    ack = await client.call("control", {"action": "pause"})
    assert ack["ok"] and ack["state"] == "paused"
    paused_at = ack["seq"]
    # Everything sent before the pause arrives, and nothing after it: the seq in the ack is
    # exactly the next seq to send. Watch for a while; a later ack flushes anything in flight.
    await _wait_seq(client, paused_at - 1)
    await asyncio.sleep(0.4)  # a window to watch in: only a stream that did not pause fails
    assert (await client.call("control", {"action": "pause"}))["seq"] == paused_at
    assert client.seqs() == list(range(paused_at))
    assert client.statuses[-1]["state"] == "paused"
    assert (await client.call("control", {"action": "resume"}))["state"] == "playing"
    assert (await client.call("control", {"action": "speed", "speed": 50}))["ok"]
    await _wait_status(client, lambda st: st["speed"] == 50)  # status follows the ack
    await client.wait_ticks(paused_at + 200)
    seqs = client.seqs()
    assert_exactly_once(seqs, 0, len(seqs))  # no gap across pause and speed change
    # Seek backwards by seq, then forwards by time.
    mark = len(client.batches)
    ack = await client.call("control", {"action": "seek", "seq": 100})
    assert ack["ok"] and ack["seq"] == 100
    after = await _after_seek(client, mark, 100)
    assert after[0] == 100 and after == list(range(100, 100 + len(after)))
    ts = pq.read_table(served.data / "fast").column("ts").cast(pa.int64()).to_pylist()
    mark = len(client.batches)
    ack = await client.call("control", {"action": "seek", "ts": iso_ns(ts[3_000])})
    assert ack["ok"] and ack["seq"] == 3_000
    after = await _after_seek(client, mark, 3_000)
    assert after == list(range(3_000, 3_000 + len(after)))


async def _wait_seq(client: Client, seq: int, timeout: float = 30) -> None:
    """Wait until a batch holding `seq` (or a later one) has arrived."""
    deadline = time.monotonic() + timeout
    while not client.batches or client.batches[-1]["seq"][-1] < seq:
        if time.monotonic() > deadline:
            last = client.batches[-1]["seq"][-1] if client.batches else None
            raise AssertionError(f"seq {seq} did not arrive within {timeout} s (last: {last})")
        client.arrived.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client.arrived.wait(), 0.2)


def _ts_of(client: Client) -> dict[int, int]:
    return {s: t for b in client.batches for s, t in zip(b["seq"], b["ts"], strict=True)}


async def _paced_after(client: Client, sent_at: float, at: int, speed: float) -> None:
    """After a control sent at `sent_at` that set `speed` with the stream at seq `at`, seqs
    arrive again, and no faster than `speed`. The batch in flight when the control came may
    hold up to max_batch (1,000) seqs past `at` sent at the old speed; after it, the clock
    anchored no earlier than `sent_at`, so seq S arrives no earlier than its event-time
    distance from `at` + 1,000, over `speed`."""
    base, seq = at + 1_000, at + 1_300
    await _wait_seq(client, seq, timeout=20)  # was: no batch for ~50 s (a stall)
    elapsed = time.monotonic() - sent_at
    ts = _ts_of(client)
    assert elapsed >= (ts[seq] - ts[base]) / 1e9 / speed * 0.8  # paced, never ahead


async def test_speed_from_max_to_a_number_paces_on_from_the_stream(client: Client) -> None:
    assert (await client.call("subscribe", {"log": "long", "speed": "max"}))["ok"]
    await client.wait_ticks(50_000, 60)  # 50 s of event time past where the stream began
    sent_at = time.monotonic()
    ack = await client.call("control", {"action": "speed", "speed": 1})
    assert ack["ok"] and ack["state"] == "playing"
    await _paced_after(client, sent_at, ack["seq"], 1)
    assert client.statuses[-1]["speed"] == 1
    seqs = client.seqs()
    assert_exactly_once(seqs, 0, len(seqs))


async def test_speed_change_while_paused_at_max(client: Client) -> None:
    assert (await client.call("subscribe", {"log": "long", "speed": "max"}))["ok"]
    await client.wait_ticks(50_000, 60)
    paused = await client.call("control", {"action": "pause"})
    ack = await client.call("control", {"action": "speed", "speed": 2})
    assert ack == {"ok": True, "state": "paused", "seq": paused["seq"]}
    await _wait_status(client, lambda st: st["state"] == "paused" and st["speed"] == 2)
    sent_at = time.monotonic()
    ack = await client.call("control", {"action": "resume"})
    assert ack == {"ok": True, "state": "playing", "seq": paused["seq"]}
    await _paced_after(client, sent_at, paused["seq"], 2)
    # Pausing and resuming at max again, then a number: still no stall.
    assert (await client.call("control", {"action": "speed", "speed": "max"}))["ok"]
    await client.wait_ticks(len(client.seqs()) + 20_000, 60)
    assert (await client.call("control", {"action": "pause"}))["ok"]
    assert (await client.call("control", {"action": "resume"}))["ok"]
    sent_at = time.monotonic()
    ack = await client.call("control", {"action": "speed", "speed": 5})
    await _paced_after(client, sent_at, ack["seq"], 5)
    seqs = client.seqs()
    assert_exactly_once(seqs, 0, len(seqs))


async def test_seek_while_paused_and_to_the_end(client: Client) -> None:
    assert (await client.call("subscribe", {"log": "fast", "speed": 1}))["ok"]
    await client.wait_ticks(10)
    assert (await client.call("control", {"action": "pause"}))["state"] == "paused"
    assert (await client.call("control", {"action": "speed", "speed": 4}))["state"] == "paused"
    ack = await client.call("control", {"action": "seek", "seq": 2_000})
    assert ack == {"ok": True, "state": "paused", "seq": 2_000}
    mark = len(client.batches)
    assert (await client.call("control", {"action": "resume"}))["state"] == "playing"
    after = await _after_seek(client, mark, 2_000)
    assert after == list(range(2_000, 2_000 + len(after)))
    # The end of the log is a valid place to seek to: the stream ends at once.
    ack = await client.call("control", {"action": "seek", "seq": 4_000})
    assert ack["ok"] and ack["seq"] == 4_000
    await client.wait_end(20)
    assert client.ends == [{"log": "fast", "last_seq": 3_999}]
    # ... and while paused it ends as soon as it resumes.
    assert (await client.call("control", {"action": "seek", "seq": 100}))["ok"]
    await _wait_seq(client, 110)
    assert (await client.call("control", {"action": "pause"}))["state"] == "paused"
    ack = await client.call("control", {"action": "seek", "seq": 4_000})
    assert ack == {"ok": True, "state": "paused", "seq": 4_000}
    client.ended.clear()
    assert (await client.call("control", {"action": "resume"}))["ok"]
    await client.wait_end(20)
    assert len(client.ends) == 2 and client.statuses[-1]["state"] == "ended"
    bad = await client.call("control", {"action": "seek", "seq": 4_001})
    assert bad["error"]["code"] == "bad_request"


async def _after_seek(client: Client, mark: int, seq: int) -> list[int]:
    """Seqs received after the seek took effect (batches already in flight are skipped)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        batches = client.batches[mark:]
        starts = [i for i, b in enumerate(batches) if b["seq"][0] == seq]
        if starts and sum(len(b["seq"]) for b in batches[starts[0]:]) >= 10:
            return [s for b in batches[starts[0]:] for s in b["seq"]]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no batch starting at seq {seq} after the seek")


async def test_symbol_filter_and_arrow_encoding(served: Served, client: Client) -> None:
    ack = await client.call("subscribe", {"log": "pair", "speed": "max", "symbols": ["ETH-USD"],
                                          "encoding": "arrow"})
    assert ack["ok"]
    await client.wait_end()
    tables = [pa.ipc.open_stream(b).read_all() for b in client.batches]
    assert all(isinstance(b, bytes) for b in client.batches)
    got = pa.concat_tables(tables)
    assert got.schema.metadata[b"log"] == b"pair"
    assert got.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    src = pq.read_table(served.data / "pair")
    eth = src.filter(pa.compute.equal(src.column("symbol"), "ETH-USD"))
    assert got.column("seq").to_pylist() == eth.column("seq").to_pylist()
    assert got.column("ts").equals(eth.column("ts"))  # exact nanoseconds
    want = _reference_sma(served.data / "pair", 5)[eth.column("seq").to_numpy()]
    sma_close(got.column("sma").to_pylist(), want)
    assert (await client.call("subscribe", {"log": "pair", "symbols": ["DOGE-USD"]})
            )["error"]["code"] == "bad_request"


BAD_PAYLOADS = [
    ("subscribe", "not an object", "bad_request"),
    ("subscribe", [1, 2], "bad_request"),
    ("subscribe", {}, "bad_request"),
    ("subscribe", {"log": 5}, "bad_request"),
    ("subscribe", {"log": "pair", "speed": 0}, "bad_request"),
    ("subscribe", {"log": "pair", "speed": -1}, "bad_request"),
    ("subscribe", {"log": "pair", "speed": 10_001}, "bad_request"),
    ("subscribe", {"log": "pair", "speed": 1e308}, "bad_request"),
    ("subscribe", {"log": "pair", "speed": "fast"}, "bad_request"),
    ("subscribe", {"log": "pair", "speed": True}, "bad_request"),
    ("subscribe", {"log": "pair", "from_seq": -1}, "bad_request"),
    ("subscribe", {"log": "pair", "from_seq": "3"}, "bad_request"),
    ("subscribe", {"log": "pair", "sma": 0}, "bad_request"),
    ("subscribe", {"log": "pair", "encoding": "xml"}, "bad_request"),
    ("subscribe", {"log": "pair", "extra": 1}, "bad_request"),
    ("subscribe", {"log": "nope"}, "unknown_log"),
    ("subscribe", {"log": "../pair"}, "unknown_log"),
    ("subscribe", {"log": "/etc/passwd"}, "unknown_log"),
    ("subscribe", {"log": "pair/seg-000000000000.parquet"}, "unknown_log"),
    ("control", {"action": "pause"}, "not_allowed"),
    ("control", {"action": "jump"}, "bad_request"),
    ("control", 42, "bad_request"),
    ("control", {"action": "seek"}, "bad_request"),
    ("control", {"action": "seek", "seq": 1, "ts": "2024-01-01T00:00:00Z"}, "bad_request"),
    ("control", {"action": "seek", "ts": "yesterday"}, "bad_request"),
    ("control", {"action": "speed", "speed": "NaN"}, "bad_request"),
    ("unsubscribe", {"x": 1}, "bad_request"),
    ("frobnicate", {}, "bad_request"),
]


async def test_every_bad_payload_gets_an_error_ack(served: Served, client: Client) -> None:
    bystander = Client()
    await bystander.connect(served.url)
    try:
        assert (await bystander.call("subscribe", {"log": "fast", "speed": 20}))["ok"]
        for event, payload, code in BAD_PAYLOADS:
            ack = await client.call(event, payload)
            assert ack["ok"] is False, (event, payload)
            assert ack["error"]["code"] == code, (event, payload, ack)
            assert ack["error"]["message"]
        # NaN cannot be written in JSON; a client library may still send it as a string.
        ack = await client.call("subscribe", {"log": "pair", "speed": float("inf")})
        assert ack["error"]["code"] == "bad_request"
        # The connection and every other client carry on.
        assert (await client.call("subscribe", {"log": "fast", "speed": "max"}))["ok"]
        await client.wait_end()
        assert_exactly_once(client.seqs(), 0, 4_000)
        await bystander.wait_end(60)
        assert_exactly_once(bystander.seqs(), 0, 4_000)
    finally:
        await bystander.close()
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/metrics") as resp:
        text = await resp.text()
    assert 'ticktape_errors_total{code="bad_request"}' in text
    assert 'ticktape_errors_total{code="unknown_log"}' in text


async def test_new_subscribe_replaces_and_unsubscribe_stops(client: Client) -> None:
    assert (await client.call("subscribe", {"log": "fast", "speed": 1}))["ok"]
    await client.wait_ticks(5)
    assert (await client.call("subscribe", {"log": "pair", "speed": "max"}))["ok"]
    await client.wait_end()
    pair = [b for b in client.batches if b["log"] == "pair"]
    assert_exactly_once([s for b in pair for s in b["seq"]], 0, TICKS)
    assert (await client.call("unsubscribe", {}))["ok"]
    assert (await client.call("control", {"action": "pause"}))["error"]["code"] == "not_allowed"


async def test_http_routes(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/api/logs") as resp:
            logs = await resp.json()
        assert resp.status == 200 and [lg["name"] for lg in logs] == ["fast", "long", "pair"]
        assert logs[2]["events"] == TICKS and logs[1]["first_ts"].endswith("Z")
        async with http.get(f"{served.url}/api/logs/pair") as resp:
            assert resp.status == 200 and (await resp.json())["events"] == TICKS
        for name in ("nope", "..%2Fpair", "%2Fetc%2Fpasswd"):
            async with http.get(f"{served.url}/api/logs/{name}") as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "unknown_log"
        async with http.get(f"{served.url}/healthz") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "ok"}
        async with http.get(f"{served.url}/metrics") as resp:
            text = await resp.text()
        for metric in ("ticktape_clients", "ticktape_streams", "ticktape_ticks_sent_total",
                       "ticktape_bytes_sent_total", "ticktape_lateness_seconds_bucket",
                       "ticktape_queue_depth", "ticktape_errors_total"):
            assert metric in text
        async with http.get(f"{served.url}/") as resp:
            assert resp.status == 200 and "<html" in (await resp.text()).lower()


async def test_many_independent_clients(served: Served) -> None:
    clients = [Client() for _ in range(20)]
    try:
        await asyncio.gather(*(c.connect(served.url) for c in clients))
        acks = await asyncio.gather(*(c.call("subscribe", {"log": "fast", "speed": "max",
                                                            "from_seq": i * 10})
                                      for i, c in enumerate(clients)))
        assert all(a["ok"] for a in acks)
        await asyncio.gather(*(c.wait_end() for c in clients))
        for i, c in enumerate(clients):
            assert_exactly_once(c.seqs(), i * 10, 4_000)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_loop_restarts_at_the_beginning(client: Client) -> None:
    assert (await client.call("subscribe", {"log": "fast", "speed": "max", "loop": True}))["ok"]
    await client.wait_ticks(6_000)
    seqs = client.seqs()
    assert seqs[:4_000] == list(range(4_000)) and seqs[4_000:4_010] == list(range(10))
    assert client.ends == []


async def test_resume_after_the_transport_is_cut(served: Served) -> None:
    proxy = TcpProxy(served.port)
    await proxy.start()
    c = Client()
    received_through: list[int] = []

    async def resubscribe() -> None:
        seqs = c.seqs()
        from_seq = seqs[-1] + 1 if seqs else 0
        received_through.append(from_seq)
        await c.call("subscribe", {"log": "pair", "speed": 20, "from_seq": from_seq})

    c.sio.on("connect", lambda: asyncio.get_running_loop().create_task(resubscribe()))
    try:
        await c.connect(f"http://127.0.0.1:{proxy.port}")
        for cut_at in (2_000, 6_000, 11_000):
            await c.wait_ticks(cut_at, 60)
            connects = len(received_through)
            proxy.cut()  # the network drops: the client reconnects through the proxy
            deadline = time.monotonic() + 20
            while len(received_through) == connects:
                assert time.monotonic() < deadline, "client did not reconnect"
                await asyncio.sleep(0.02)
        await c.wait_end(90)
        assert len(received_through) >= 4  # first connect + three reconnects
        assert_exactly_once(c.seqs(), 0, TICKS)
    finally:
        await c.close()
        await proxy.close()


async def test_token_auth(data_dir: Path) -> None:
    async with serve_in_process(ServerConfig(path=data_dir, port=0, token="s3cret")) as s:
        refused = Client()
        errors: list[object] = []
        refused.sio.on("connect_error", errors.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.sio.connect(s.url, transports=["websocket"], wait_timeout=5)
        assert errors == [{"message": "a valid token is required",
                           "data": {"code": "unauthorized"}}]
        ok = Client()
        await ok.connect(s.url, auth={"token": "s3cret"})
        assert (await ok.call("subscribe", {"log": "fast", "speed": "max"}))["ok"]
        await ok.wait_end()
        await ok.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{s.url}/api/logs") as resp:
                assert resp.status == 401
            async with http.get(f"{s.url}/api/logs",
                                headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200


async def test_cors_origins_are_configurable(data_dir: Path) -> None:
    config = ServerConfig(path=data_dir, port=0, cors_origins=("http://dash.example",))
    async with serve_in_process(config) as s, aiohttp.ClientSession() as http:
        async with http.get(f"{s.url}/api/logs", headers={"Origin": "http://dash.example"}) as r:
            assert r.headers.get("Access-Control-Allow-Origin") == "http://dash.example"
        async with http.get(f"{s.url}/api/logs", headers={"Origin": "http://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        handshake = f"{s.url}/socket.io/?EIO=4&transport=polling"
        async with http.get(handshake, headers={"Origin": "http://dash.example"}) as r:
            assert r.status == 200
        async with http.get(handshake, headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 400  # python-socketio refuses origins not allowed


async def test_a_burst_of_controls_applies_in_order(served: Served, client: Client) -> None:
    assert (await client.call("subscribe", {"log": "pair", "speed": 5}))["ok"]
    await client.wait_ticks(5)
    targets = [1_000, 9_000, 3_000, 15_000, 7_000]
    mark = len(client.batches)
    acks = await asyncio.gather(*(client.call("control", {"action": "seek", "seq": t})
                                  for t in targets))
    assert [a["seq"] for a in acks] == targets  # each acknowledged in the order sent
    after = await _after_seek(client, mark, 7_000)
    assert after[0] == 7_000
    # The stream is where the last seek put it: from the batch that starts at 7,000 on, seqs
    # run on without a jump up to where a pause stops it.
    paused = await client.call("control", {"action": "pause"})
    await _wait_seq(client, paused["seq"] - 1)
    start = next(i for i in range(len(client.batches) - 1, mark - 1, -1)
                 if client.batches[i]["seq"][0] == 7_000)
    assert [s for b in client.batches[start:] for s in b["seq"]] == list(
        range(7_000, paused["seq"]))
    # Two quick subscribes leave exactly one stream.
    await asyncio.gather(client.call("subscribe", {"log": "fast", "speed": "max"}),
                         client.call("subscribe", {"log": "pair", "speed": "max"}))
    await client.wait_end()
    assert len(served.server.streams) == 1


@pytest.fixture
async def damaged(tmp_path: Path) -> AsyncIterator[Served]:
    """A folder with a readable log, one a recorder left open, and one that rots at seq 2,000."""
    data = tmp_path / "damaged"
    data.mkdir()
    for name in ("good", "rotten"):
        make_log(data / name, ticks=3_000, segment_rows=1_000)
    rot_column(data / "rotten" / "seg-000000002000.parquet")
    make_log(data / "crashed", ticks=100)
    (data / "crashed" / "_journal.arrows").write_bytes(b"")
    async with serve_in_process(ServerConfig(path=data, port=0)) as s:
        yield s


def _assert_no_path(text: str, served: Served) -> None:
    for path in (str(served.data), str(served.data.resolve()), "pytest-of"):
        assert path not in text, text


async def test_errors_name_the_log_never_a_server_path(damaged: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{damaged.url}/api/logs") as resp:
            listing = await resp.text()
        assert resp.status == 200 and "crashed" in listing and "recover" in listing
        _assert_no_path(listing, damaged)
        async with http.get(f"{damaged.url}/api/logs/crashed") as resp:
            body = await resp.text()
        assert resp.status == 404 and "crashed" in body
        _assert_no_path(body, damaged)
    c = Client()
    await c.connect(damaged.url)
    try:
        ack = await c.call("subscribe", {"log": "crashed"})
        assert ack["ok"] is False and "crashed" in ack["error"]["message"]
        _assert_no_path(str(ack), damaged)
        assert (await c.call("subscribe", {"log": "good", "speed": 1}))["ok"]
        await c.wait_ticks(1)
        assert (await c.call("control", {"action": "pause"}))["ok"]
        # A segment vanishes under the server (an operator, a disk): reading it fails.
        (damaged.data / "good" / "seg-000000002000.parquet").unlink()
        ack = await c.call("control", {"action": "seek", "seq": 2_000})
        assert ack["ok"] is False and ack["error"]["code"] == "log_error"
        assert "good" in ack["error"]["message"]
        _assert_no_path(str(ack), damaged)
        # Now the stream meets it while playing: its status says why, naming no path.
        assert (await c.call("control", {"action": "seek", "seq": 1_500}))["ok"]
        assert (await c.call("control", {"action": "speed", "speed": "max"}))["ok"]
        assert (await c.call("control", {"action": "resume"}))["ok"]
        failed = await _wait_status(c, lambda s: str(s.get("reason", "")).startswith("error"))
        assert "good" in failed["reason"] and failed["state"] == "ended"
        _assert_no_path(str(c.statuses), damaged)
    finally:
        await c.close()


async def _wait_status(client: Client, match: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in client.statuses if match(s)]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, client.statuses
        await asyncio.sleep(0.02)


async def test_a_stream_that_failed_refuses_controls(damaged: Served) -> None:
    c = Client()
    await c.connect(damaged.url)
    try:
        assert (await c.call("subscribe", {"log": "rotten", "speed": "max"}))["ok"]
        failed = await _wait_status(c, lambda s: s["state"] == "ended")
        assert str(failed.get("reason")).startswith("error: rotten: ")
        assert_exactly_once(c.seqs(), 0, 2_000)  # everything readable before the damage
        assert c.ends == []  # it failed; it did not reach the end
        for control in ({"action": "seek", "seq": 0}, {"action": "resume"},
                        {"action": "speed", "speed": 2}, {"action": "pause"}):
            ack = await c.call("control", control)
            assert ack["ok"] is False and ack["error"]["code"] == "log_error", (control, ack)
            assert "subscribe again" in ack["error"]["message"]
        # A new subscribe is the way on; a part that cannot be read is refused up front.
        ack = await c.call("subscribe", {"log": "rotten", "from_seq": 2_500})
        assert ack["ok"] is False and ack["error"]["code"] == "log_error"
        assert (await c.call("control", {"action": "pause"}))["error"]["code"] == "not_allowed"
        assert (await c.call("subscribe", {"log": "rotten", "speed": "max", "from_seq": 1_990})
                )["ok"]
        await _wait_status(c, lambda s: s["state"] == "ended" and s["seq"] == 2_000)
    finally:
        await c.close()


async def test_a_non_ascii_token_is_just_unauthorized(data_dir: Path) -> None:
    async with serve_in_process(ServerConfig(path=data_dir, port=0, token="s3cret-ü")) as s:
        for offered in ("sécret", "s3cret-u", "\ud800", "s3cret-ü\x00"):
            refused = Client()
            errors: list[object] = []
            refused.sio.on("connect_error", errors.append)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await refused.sio.connect(s.url, transports=["websocket"], wait_timeout=5,
                                          auth={"token": offered})
            assert errors == [{"message": "a valid token is required",
                               "data": {"code": "unauthorized"}}], offered
        query = Client()
        query_errors: list[object] = []
        query.sio.on("connect_error", query_errors.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await query.sio.connect(f"{s.url}?token=s%C3%A9cret", transports=["websocket"],
                                    wait_timeout=5)
        assert query_errors and query_errors[0]["data"] == {"code": "unauthorized"}
        ok = Client()
        await ok.connect(s.url, auth={"token": "s3cret-ü"})
        assert (await ok.call("subscribe", {"log": "fast", "speed": "max"}))["ok"]
        await ok.close()
        via_query = Client()
        await via_query.connect(f"{s.url}?token=s3cret-%C3%BC")
        await via_query.close()
        async with aiohttp.ClientSession() as http:
            for params in ({"token": "sécret"}, {"token": "s3cret-ü"}):
                async with http.get(f"{s.url}/api/logs", params=params) as resp:
                    assert resp.status == (200 if params["token"] == "s3cret-ü" else 401)
                    if resp.status == 401:
                        assert (await resp.json())["error"]["code"] == "unauthorized"
            # aiohttp sends and reads header values as UTF-8.
            for header, status in (("Bearer sécret", 401), ("Bearer s3cret-ü", 200),
                                   ("Bearer \udcff", 401)):
                async with http.get(f"{s.url}/api/logs",
                                    headers={"Authorization": header}) as resp:
                    assert resp.status == status, header
