"""`analyze` and `report` end to end: per-symbol values vs pandas, determinism, bad input."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from plotly.offline import get_plotlyjs

from analysis.streaming import IndicatorSpec, StreamingIndicators
from tests.conftest import make_log, run_cli


@pytest.fixture(scope="module")
def two_symbol_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_log(tmp_path_factory.mktemp("logs") / "pair", ticks=60_000,
                    symbols="BTC-USD,ETH-USD", rate=40, segment_rows=25_000)


def test_analyze_matches_pandas_per_symbol(two_symbol_log: Path, tmp_path: Path) -> None:
    out = tmp_path / "ind.parquet"
    result = run_cli("analyze", str(two_symbol_log), "-o", str(out), "--sma", "5,20",
                     "--ema", "12", "--vwap", "--returns", "--drawdown", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 60_000
    got = pd.read_parquet(out)
    assert list(got.columns[:4]) == ["seq", "ts", "symbol", "price"]
    src = pd.read_parquet(two_symbol_log)
    by = src.groupby("symbol")["price"]
    expected = {
        "sma_5": by.transform(lambda s: s.rolling(5).mean()),
        "sma_20": by.transform(lambda s: s.rolling(20).mean()),
        "ema_12": by.transform(lambda s: s.ewm(span=12, adjust=False).mean()),
        "vwap": (src["price"] * src["size"]).groupby(src["symbol"]).cumsum()
        / src["size"].groupby(src["symbol"]).cumsum(),
        "log_return": by.transform(lambda s: np.log(s).diff()),
        "drawdown": src["price"] / by.cummax() - 1,
    }
    for col, theirs in expected.items():
        ours = got[col].to_numpy(dtype=float, na_value=np.nan)
        t = theirs.to_numpy()
        assert np.array_equal(np.isnan(ours), np.isnan(t)), col
        ok = ~np.isnan(t)
        assert np.max(np.abs(ours[ok] - t[ok]) / np.maximum(np.abs(t[ok]), 1e-12)) < 1e-9, col
    # SMA is null (not NaN) until 5 prices of that symbol exist.
    table = pq.read_table(out)
    assert table.column("sma_5").null_count == 2 * 4


def test_batch_boundaries_do_not_change_values(two_symbol_log: Path) -> None:
    table = pq.read_table(two_symbol_log)
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    price, size = table.column("price").to_numpy(), table.column("size").to_numpy()
    spec = IndicatorSpec(sma=(5, 50), ema=(20,), vwap=True, rolling_vwap=(30,),
                         returns=True, volatility=(100,), drawdown=True,
                         anomaly_window=200, anomaly_stride=25)
    whole = StreamingIndicators(spec).update(table.column("symbol"), ts, price, size)
    stream = StreamingIndicators(spec)
    cuts = [0, 1, 2, 9, 1_000, 1_003, 33_333, 60_000]
    parts = [stream.update(table.column("symbol").slice(a, b - a), ts[a:b], price[a:b],
                           size[a:b]) for a, b in itertools.pairwise(cuts)]
    for name, values in whole.items():
        joined = np.concatenate([p[name] for p in parts]).astype(float)
        values = values.astype(float)
        assert np.array_equal(np.isnan(joined), np.isnan(values)), name
        ok = ~np.isnan(values)
        rel = np.abs(joined[ok] - values[ok]) / np.maximum(np.abs(values[ok]), 1e-300)
        assert rel.max(initial=0) <= 1e-9, name


def test_report_is_byte_identical_across_processes(two_symbol_log: Path, tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        html, summary = tmp_path / f"r{i}.html", tmp_path / f"s{i}.json"
        result = run_cli("report", str(two_symbol_log), "-o", str(html), "--json", str(summary),
                         "--sma", "5,20")
        assert result.returncode == 0, result.stderr
        outs.append((html.read_bytes(), summary.read_bytes()))
    assert outs[0] == outs[1]
    page = outs[0][0].decode()
    assert 'id="price-btc-usd"' in page and 'id="candles-eth-usd"' in page
    # Self-contained: the only script is plotly.js itself, inlined unchanged, and nothing
    # outside it names a remote URL.
    bundle = get_plotlyjs()
    assert page.count(bundle) == 1
    rest = page.replace(bundle, "")
    assert not re.search(r"https?://|//cdn|<script[^>]+src=|<link[^>]+href=", rest)


def test_report_summary_values(two_symbol_log: Path, tmp_path: Path) -> None:
    summary_path = tmp_path / "s.json"
    assert run_cli("report", str(two_symbol_log), "-o", str(tmp_path / "r.html"),
                   "--json", str(summary_path)).returncode == 0
    summary = json.loads(summary_path.read_text())
    src = pd.read_parquet(two_symbol_log)
    assert summary["events"] == 60_000 and summary["ticktape"]["seed"] == 7
    for symbol, group in src.groupby("symbol"):
        got = summary["symbols"][symbol]
        assert got["events"] == len(group)
        assert got["open"] == group["price"].iloc[0] and got["close"] == group["price"].iloc[-1]
        assert got["high"] == group["price"].max() and got["low"] == group["price"].min()
        vwap = (group["price"] * group["size"]).sum() / group["size"].sum()
        assert got["vwap"] == pytest.approx(vwap, rel=1e-12)
        dd = (group["price"] / group["price"].cummax() - 1).min()
        assert got["max_drawdown"] == pytest.approx(dd, rel=1e-12)


def test_content_hash_follows_events_not_segments(tmp_path: Path) -> None:
    a = make_log(tmp_path / "a", ticks=5_000, segment_rows=1_000)
    b = make_log(tmp_path / "b", ticks=5_000, segment_rows=5_000)

    def digest(log: Path) -> str:
        out = tmp_path / f"{log.name}.json"
        assert run_cli("report", str(log), "-o", str(tmp_path / "x.html"),
                       "--json", str(out)).returncode == 0
        return str(json.loads(out.read_text())["content_sha256"])

    assert digest(a) == digest(b)
    seg = a / "seg-000000002000.parquet"
    table = pq.read_table(seg)
    prices = table.column("price").to_pylist()
    prices[5] += 0.01
    pq.write_table(table.set_column(3, "price", pa.array(prices)), seg)
    assert digest(a) != digest(b)


def test_two_million_tick_report_within_size_target(tmp_path: Path) -> None:
    log = make_log(tmp_path / "big", ticks=2_000_000)
    out = tmp_path / "big.html"
    result = run_cli("report", str(log), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size <= 6 * 1024 * 1024


def test_report_and_analyze_bad_input(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=500, segment_rows=250)

    def err(*args: str) -> tuple[int, str]:
        result = run_cli(*args)
        assert "Traceback" not in result.stderr
        return result.returncode, result.stderr.strip().splitlines()[-1]

    assert err("report", str(tmp_path / "nope")) == (2, f"error: no such log: {tmp_path / 'nope'}")
    assert err("report", str(log), "-o", str(tmp_path / "none" / "r.html")) == (
        2, f"error: cannot write {tmp_path / 'none' / 'r.html'}: directory "
           f"{tmp_path / 'none'} does not exist")
    assert err("report", str(log), "--sma", "900", "-o", str(tmp_path / "r.html")) == (
        2, "error: --sma 900 is longer than the log (500 events)")
    code, message = err("report", str(log), "--interval", "30d", "-o", str(tmp_path / "r.html"))
    assert code == 2 and "longer than the log's span" in message
    code, message = err("report", str(log), "--interval", "soon", "-o", str(tmp_path / "r.html"))
    assert code == 2 and "--interval" in message
    assert err("analyze", str(log), "-o", str(log / "x.parquet"))[1] == (
        f"error: output {log / 'x.parquet'} must not be inside the log {log}")
    code, message = err("analyze", str(log), "-o", str(tmp_path / "a.parquet"), "--sma", "x")
    assert code == 2 and "comma-separated integers" in message
    # Damaged: the message sends the user to verify; nothing is written.
    seg = log / "seg-000000000250.parquet"
    seg.write_bytes(seg.read_bytes()[:100])
    code, message = err("report", str(log), "-o", str(tmp_path / "r.html"))
    assert code == 1 and "ticktape verify" in message
    assert not (tmp_path / "r.html").exists()
    # Left open by a killed recorder: the message names recover.
    killed = make_log(tmp_path / "killed", ticks=100)
    (killed / "_journal.arrows").write_bytes(b"")
    code, message = err("analyze", str(killed), "-o", str(tmp_path / "a.parquet"))
    assert code == 1 and "ticktape recover" in message


def test_empty_log_reports_clearly(tmp_path: Path) -> None:
    from recorder.log import LogWriter

    with LogWriter(tmp_path / "empty", {"source": "test"}):
        pass
    for command in (["report", "-o", str(tmp_path / "r.html")],
                    ["analyze", "-o", str(tmp_path / "a.parquet")]):
        result = run_cli(command[0], str(tmp_path / "empty"), *command[1:])
        assert result.returncode == 1
        assert result.stderr.strip() == f"error: log empty is empty: nothing to {command[0]}"


def test_real_logs_analyze_and_report_with_venue_not_seed(tmp_path: Path) -> None:
    from recorder.log import SCHEMA, LogWriter, make_batch

    n = 3_000
    rng = np.random.default_rng(3)
    seq = np.arange(n, dtype=np.int64)
    ts = 1_735_689_600_000_000_000 + np.cumsum(rng.integers(1, 10**8, n))
    price = 94_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    base = make_batch(seq, ts, pa.array(["BTC-USDT"] * n), price, np.full(n, 0.01),
                      pa.array(rng.choice(["buy", "sell"], n)))
    batch = pa.RecordBatch.from_arrays(
        [*base.columns, pa.array([str(i) for i in range(n)]), pa.array(["binance"] * n)],
        names=[*SCHEMA.names, "trade_id", "venue"])
    log = tmp_path / "btc-jan"
    with LogWriter(log, {"source": "import:binance-trades"},
                   optional_columns=("trade_id", "venue")) as writer:
        writer.append(batch)
    out = tmp_path / "ind.parquet"
    assert run_cli("analyze", str(log), "-o", str(out), "--sma", "5").returncode == 0
    assert pq.read_table(out).num_rows == n
    page = tmp_path / "report.html"
    done = run_cli("report", str(log), "-o", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "source <code>import:binance-trades</code>" in text
    assert "venue <code>binance</code>" in text and "seed <code>" not in text


@pytest.mark.parametrize("rows", [1, 3, 8, 9, 40])
@pytest.mark.parametrize("width", [7, 8, 300])
def test_robust_stats_equal_numpy_medians_bit_for_bit(rows: int, width: int) -> None:
    """Few rows take a partition, many a bisection: both give np.median's exact values."""
    from analysis.indicators import _MAD_SCALE, robust_stats

    rng = np.random.default_rng(rows * 1_000 + width)
    windows = np.round(rng.normal(0, 1e-4, (rows, width)), 6)  # rounded: ties happen
    windows[0, : width // 2 + 1] = 0.0  # a row whose MAD is zero
    if rows > 2:
        windows[2, 1] = np.nan
    med, sigma = robust_stats(windows.copy())
    ref_med = np.median(windows, axis=1)
    ref_sigma = np.median(np.abs(windows - ref_med[:, None]), axis=1) * _MAD_SCALE
    ref_sigma[ref_sigma == 0] = np.nan
    assert np.array_equal(med, ref_med, equal_nan=True)
    assert np.array_equal(sigma, ref_sigma, equal_nan=True)
    assert np.isnan(sigma[0])
