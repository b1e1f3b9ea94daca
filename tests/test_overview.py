"""`GET /api/logs/{name}/overview`: the whole log's price per symbol, M4-downsampled; checked
against pandas over the same log, and for its errors and its token guard."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recorder.log import Log
from replayer.config import ServerConfig
from replayer.errors import BadRequest
from replayer.overview import MAX_BUCKETS, parse_buckets
from tests.conftest import make_log
from tests.replay_helpers import serve_in_process


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("overview")
    make_log(d / "pair", ticks=20_000, symbols="BTC-USD,ETH-USD", rate=20, segment_rows=7_000)
    return d


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


def _frame(path: Path) -> pd.DataFrame:
    df = pa.Table.from_batches(list(Log(path).iter_batches())).select(["ts", "symbol", "price"]).to_pandas()
    df["ts"] = df["ts"].astype("int64")
    return df


async def test_overview_keeps_every_buckets_extremes_per_symbol(data_dir: Path) -> None:
    buckets = 50
    async with serve_in_process(ServerConfig(path=data_dir, port=0)) as s:
        status, body = await _get(f"{s.url}/api/logs/pair/overview?buckets={buckets}")
    assert status == 200, body
    df = _frame(data_dir / "pair")
    t0, t1 = int(df["ts"].min()), int(df["ts"].max())
    assert {k: body[k] for k in ("log", "buckets", "events", "first_ts_ns", "last_ts_ns")} == {
        "log": "pair", "buckets": buckets, "events": len(df), "first_ts_ns": t0, "last_ts_ns": t1}
    assert sorted(body["symbols"]) == ["BTC-USD", "ETH-USD"]
    width = -(-(t1 - t0 + 1) // buckets)
    for name, series in body["symbols"].items():
        ts, price = np.array(series["ts"]), np.array(series["price"])
        assert len(ts) == len(price) <= 4 * buckets
        assert (np.diff(ts) >= 0).all() and ts[0] >= t0 and ts[-1] <= t1
        one = df[df["symbol"] == name]
        # First and last tick, and each bucket's lowest and highest price, are kept.
        assert (ts[0], price[0]) == (one["ts"].iloc[0], one["price"].iloc[0])
        assert (ts[-1], price[-1]) == (one["ts"].iloc[-1], one["price"].iloc[-1])
        bucket = (one["ts"] - t0) // width
        points = pd.DataFrame({"bucket": (ts - t0) // width, "price": price})
        for b, group in one.groupby(bucket):
            kept = points[points["bucket"] == b]["price"]
            assert group["price"].min() == kept.min() and group["price"].max() == kept.max(), (name, b)


async def test_overview_errors_and_cache(data_dir: Path) -> None:
    async with serve_in_process(ServerConfig(path=data_dir, port=0)) as s:
        url = f"{s.url}/api/logs"
        assert await _get(f"{url}/nope/overview") == (
            404, {"error": {"code": "unknown_log", "message": "unknown log 'nope'"}})
        status, body = await _get(f"{url}/..%2Fpair/overview")
        assert status == 404 and body["error"]["code"] in ("unknown_log", "not_found")
        for query, message in [
                ("buckets=0", f"buckets: expected an integer in [1, {MAX_BUCKETS}], got '0'"),
                ("buckets=x", f"buckets: expected an integer in [1, {MAX_BUCKETS}], got 'x'"),
                (f"buckets={MAX_BUCKETS + 1}", "buckets: expected an integer in [1, "
                                               f"{MAX_BUCKETS}], got '{MAX_BUCKETS + 1}'"),
                ("bucket=5", "unknown query parameter 'bucket'; expected: buckets")]:
            assert await _get(f"{url}/pair/overview?{query}") == (
                400, {"error": {"code": "bad_request", "message": message}}), query
        # Concurrent requests share one pass and one answer; the default is 1000 buckets.
        answers = await asyncio.gather(*(_get(f"{url}/pair/overview") for _ in range(3)))
        assert [a[0] for a in answers] == [200] * 3
        assert answers[0][1] == answers[1][1] == answers[2][1]
        assert answers[0][1]["buckets"] == 1000
        assert s.server.metrics.errors["bad_request"] >= 4


async def test_overview_needs_the_token(data_dir: Path) -> None:
    async with serve_in_process(ServerConfig(path=data_dir, port=0, token="s3cret")) as s:
        url = f"{s.url}/api/logs/pair/overview?buckets=10"
        status, body = await _get(url)
        assert (status, body["error"]["code"]) == (401, "unauthorized")
        assert (await _get(url, {"Authorization": "Bearer wrong"}))[0] == 401
        status, body = await _get(url, {"Authorization": "Bearer s3cret"})
        assert status == 200 and body["log"] == "pair"
        assert (await _get(url + "&token=s3cret"))[0] == 200


def test_parse_buckets() -> None:
    assert parse_buckets({}) == 1000
    assert parse_buckets({"buckets": "7", "token": "t"}) == 7
    for bad in ("-1", "1.5", "", "١٢"):  # Arabic-Indic digits are digits to str.isdigit
        with pytest.raises(BadRequest, match="buckets: expected an integer"):
            parse_buckets({"buckets": bad})
