"""tardis.dev, Bybit and mapped-CSV imports, symbol normalization and ImportConfig validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recorder.errors import ConfigError
from recorder.importers import ImportConfig, import_files, normalize_symbol, parse_column_map
from recorder.importers.errors import MalformedRowError, UnrecognisedFormatError
from recorder.log import verify_log
from tests.conftest import run_cli
from tests.import_helpers import BYBIT_HEADER, TARDIS_HEADER, write_gz
from tests.test_import import LOG_COLUMNS, last_line, read_log


def tardis_rows(n: int, *, seed: int, start: int = 0) -> pd.DataFrame:
    """Exchange times mostly increasing, with some going backwards a little, as tardis' files
    (ordered by local_timestamp) have them; some empty ids and `unknown` sides."""
    rng = np.random.default_rng(seed)
    base = 1_717_200_000_000_000 + np.cumsum(rng.integers(0, 500, n + start))[start:]
    ts = base - np.where(rng.random(n) < 0.05, rng.integers(1, 2_000, n), 0)
    ids = [str(7_000_000 + start + i) for i in range(n)]
    for i in range(0, n, 97):
        ids[i] = ""
    return pd.DataFrame({
        "exchange": "binance-futures", "symbol": "BTCUSDT", "timestamp": ts,
        "local_timestamp": base + 1_500, "id": ids,
        "side": rng.choice(["buy", "sell", "unknown"], n, p=[0.45, 0.45, 0.1]),
        "price": np.round(67_000 + rng.normal(0, 5, n), 1),
        "amount": np.round(rng.integers(1, 900, n) * 0.001, 3)})


def test_tardis_trades_gz_overlapping_out_of_order(tmp_path: Path) -> None:
    everything = tardis_rows(3_000, seed=1)
    a, b = everything.iloc[:1_800], everything.iloc[1_200:]
    paths = []
    for name, part in (("binance-futures_trades_2024-06-01_BTCUSDT.csv.gz", a),
                       ("binance-futures_trades_2024-06-01b_BTCUSDT.csv.gz", b)):
        paths.append(write_gz(tmp_path / name, part.to_csv(index=False)))
    assert paths[0].read_bytes()[:2] == b"\x1f\x8b"
    result = run_cli("import", str(tmp_path / "t"), *map(str, paths))
    assert result.returncode == 0, result.stderr
    assert "format     tardis-trades, recognised from the content" in result.stdout
    report = import_files(ImportConfig(log=tmp_path / "t2", files=tuple(paths),
                                       block_bytes=16_384))
    assert report.sorted_in_runs == [str(p) for p in paths]
    assert report.venues == ["binance-futures"] and report.symbols == {"BTC-USDT": "BTCUSDT"}
    # Independently: concat in path order, drop repeated (venue, symbol, id, time) with an id,
    # order by (time, id length, id) with id-less rows last among equals.
    df = pd.concat([pd.read_csv(p, dtype={"id": str}) for p in paths], ignore_index=True)
    dup = df.duplicated(subset=["exchange", "symbol", "id", "timestamp"]) & df["id"].notna()
    df = df[~dup]
    df = df.assign(ts=pd.to_datetime(df["timestamp"], unit="us", utc=True),
                   n=df["id"].str.len().fillna(1e9), key=df["id"].fillna(""))
    df = df.sort_values(["ts", "n", "key"], kind="stable").reset_index(drop=True)
    assert report.duplicates_dropped == int(dup.sum()) > 500
    got = read_log(tmp_path / "t2")
    assert verify_log(tmp_path / "t2").ok
    expected = pd.DataFrame({
        "ts": df["ts"].astype("datetime64[ns, UTC]"), "symbol": "BTC-USDT", "price": df["price"],
        "size": df["amount"], "side": df["side"], "trade_id": df["id"],
        "venue": "binance-futures"})
    pd.testing.assert_frame_equal(got[LOG_COLUMNS].astype(object), expected.astype(object))
    recv = pd.to_datetime(df["local_timestamp"], unit="us", utc=True).astype("datetime64[ns, UTC]")
    assert (got["recv_ts"] == recv).all()
    pd.testing.assert_frame_equal(read_log(tmp_path / "t"), got)


def test_bybit_trades_descending_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 2_000
    us = 1_735_689_600_000_000 + np.cumsum(rng.integers(0, 3, n) * 100)
    side = rng.choice(["Buy", "Sell"], n)
    price = np.round(94_000 + rng.normal(0, 3, n), 1)
    size = rng.integers(1, 500, n) * 0.001
    ids = [f"{rng.integers(1 << 60):016x}-aaaa-bbbb-cccc-{i:012d}" for i in range(n)]
    lines = [BYBIT_HEADER, *[
        f"{u // 1_000_000}.{(u % 1_000_000) // 100:04d},BTCUSDT,{s},{q:.3f},{p:.1f},PlusTick,"
        f"{i},{int(p * q * 1e8)},{q:.3f},{p * q:.4f}"
        for u, s, q, p, i in zip(us, side, size, price, ids, strict=True)][::-1]]  # newest first
    path = write_gz(tmp_path / "BTCUSDT2025-01-01.csv.gz", "\n".join(lines) + "\n")
    report = import_files(ImportConfig(log=tmp_path / "b", files=(path,)))
    assert (report.format, report.venues, report.events) == ("bybit-trades", ["bybit"], n)
    assert report.sorted_in_runs == [str(path)]  # seen in the first block: sorted at once
    got = read_log(tmp_path / "b")
    expected = pd.DataFrame({"ts": us * 1_000, "side": np.char.lower(side), "id": ids})
    expected = expected.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)
    assert (got["ts"].astype("int64").to_numpy() == expected["ts"].to_numpy()).all()
    assert got["trade_id"].tolist() == expected["id"].tolist()
    assert got["side"].tolist() == expected["side"].tolist()
    assert set(got["symbol"]) == {"BTC-USDT"}


def test_csv_with_map_iso_times_and_maker_side(tmp_path: Path) -> None:
    path = tmp_path / "fills.csv"
    path.write_text("when,px,qty,aggr,pair\n"
                    "2024-03-01T00:00:01.500Z,100.5,2,buy,ETH/USD\n"
                    "2024-03-01T00:00:00.250000001Z,100.0,1,SELL,ETH/USD\n"
                    "2024-03-01T00:00:01.500Z,100.5,2,buy,ETH/USD\n")
    result = run_cli("import", str(tmp_path / "c"), str(path), "--format", "csv", "--map",
                     "ts=when,price=px,size=qty,side=aggr,symbol=pair", "--time-unit", "iso",
                     "--side-from", "maker", "--venue", "kraken")
    assert result.returncode == 0, result.stderr
    got = read_log(tmp_path / "c")
    assert got["ts"].astype("int64").tolist() == [1_709_251_200_250_000_001,
                                                  1_709_251_201_500_000_000,
                                                  1_709_251_201_500_000_000]
    assert got["side"].tolist() == ["buy", "sell", "sell"]  # the maker's side, flipped
    assert got["symbol"].tolist() == ["ETH-USD"] * 3 and set(got["venue"]) == {"kraken"}
    assert got["trade_id"].isna().all()  # no ids: nothing is a duplicate


def test_csv_seconds_buyer_maker_bool_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("t,p,q,m,tid\n1700000000.123456,5,1,true,9\n1700000000.5,6,1,false,10\n"
                    "1700000000.5,6,1,false,10\n")
    report = import_files(ImportConfig(
        log=tmp_path / "s", files=(path,), format="csv", symbol="solusdc", time_unit="s",
        side_from="buyer-maker-bool",
        column_map=parse_column_map("ts=t,price=p,size=q,side=m,trade_id=tid")))
    assert report.duplicates_dropped == 1 and report.symbols == {"SOL-USDC": "SOL-USDC"}
    got = read_log(tmp_path / "s")
    assert got["ts"].astype("int64").tolist() == [1_700_000_000_123_456_000,
                                                  1_700_000_000_500_000_000]
    assert got["side"].tolist() == ["sell", "buy"] and got["trade_id"].tolist() == ["9", "10"]


def test_csv_errors_name_the_column_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("t,p,q,s\n1,5,1,buy\n2,5,1,hold\n")
    base = ["import", str(tmp_path / "x"), str(path), "--format", "csv", "--time-unit", "ms",
            "--symbol", "BTC-USD"]
    result = run_cli(*base, "--map", "ts=t,price=p,size=q,side=s")
    assert last_line(result.stderr) == f"error: {path}:3: side (s) 'hold' is not one of buy, sell, unknown"
    result = run_cli(*base, "--map", "ts=time,price=p,size=q")
    assert last_line(result.stderr) == (f"error: {path}: --map names column(s) 'time' that the "
                                        "header does not have (it has: t, p, q, s)")
    assert result.returncode == 2 and not (tmp_path / "x").exists()


def test_tardis_bad_side_and_time_unit(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "t.csv.gz", TARDIS_HEADER + "\n"
                    "deribit,BTC-PERPETUAL,1717200000000000,1717200000000100,1,buy,1,10\n"
                    "deribit,BTC-PERPETUAL,1717200000001,1717200000000200,2,sell,1,10\n")
    with pytest.raises(MalformedRowError) as exc:
        import_files(ImportConfig(log=tmp_path / "x", files=(path,)))
    assert str(exc.value) == (f"{path}:3: timestamp 1717200000001 is not in microseconds like "
                              "the first row of this file")
    with pytest.raises(UnrecognisedFormatError):
        import_files(ImportConfig(log=tmp_path / "x", files=(path,), format="bybit-trades"))


@pytest.mark.parametrize(("native", "normalized"), [
    ("BTCUSDT", "BTC-USDT"), ("BTCFDUSD", "BTC-FDUSD"), ("BTCTUSD", "BTC-TUSD"),
    ("ETHBTC", "ETH-BTC"), ("USDTTRY", "USDT-TRY"), ("BTCUSD_PERP", "BTC-USD-PERP"),
    ("ETHUSDT_250328", "ETH-USDT-250328"), ("btc/usd", "BTC-USD"), ("BTC-PERPETUAL", "BTC-PERPETUAL"),
    ("XBTUSD", "XBT-USD"), ("1000PEPEUSDC", "1000PEPE-USDC"), ("OPUSDT", "OP-USDT"),
    ("WEIRD", "WEIRD"), ("USDT", "USDT"),
])
def test_symbol_normalization(native: str, normalized: str) -> None:
    assert normalize_symbol(native) == normalized


def test_config_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    files = (tmp_path / "a.csv",)
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(files=()), "name at least one FILE to import"),
        (dict(format="kraken"), "--format 'kraken' is unknown: choose from binance-trades, "
                                "binance-aggtrades, tardis-trades, bybit-trades, csv"),
        (dict(format="csv", symbol="X"), "--format csv needs --map with ts, price, size, e.g. "
                                         "--map ts=time,price=p,size=q,side=s"),
        (dict(format="csv", symbol="X", column_map=(("ts", "t"), ("price", "p"), ("size", "q"))),
         "--format csv needs --time-unit (s|ms|us|ns|iso)"),
        (dict(format="csv", column_map=(("ts", "t"), ("price", "p"), ("size", "q")),
              time_unit="ms"), "--format csv needs a symbol: --map symbol=COLUMN or --symbol SYM"),
        (dict(format="csv", symbol="X", column_map=(("ts", "t"), ("price", "p"), ("size", "q")),
              time_unit="ms", side_from="maker"), "--side-from needs a side column: --map side=COLUMN"),
        (dict(time_unit="ms"), "--time-unit: only for --format csv"),
        (dict(venue="my venue"), "--venue 'my venue' is malformed: expected letters, digits, '.', "
                                 "'_' or '-'"),
        (dict(symbol="btc usd"), "--symbol 'btc usd' is malformed: expected capitals, digits and "
                                 "'-', e.g. BTC-USDT or BTCUSDT"),
        (dict(files=(files[0], tmp_path / "." / "a.csv")), f"{tmp_path / '.' / 'a.csv'} is named twice"),
        (dict(segment_rows=0), "--segment-rows must be >= 1, got 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(Exception) as exc:
            ImportConfig(**{"log": tmp_path / "x", "files": files, **kwargs})
        assert str(exc.value) == message, kwargs
        assert exc.value.exit_code == 2  # type: ignore[attr-defined]
    for text, message in [("ts", "--map item 'ts' is malformed: expected FIELD=COLUMN, e.g. "
                                 "ts=time,price=p,size=q"),
                          ("when=t", "--map field 'when' is unknown: choose from ts, price, size, "
                                     "side, symbol, trade_id, venue"),
                          ("ts=a,ts=b", "--map field 'ts' is given twice")]:
        with pytest.raises(ConfigError, match="^" + __import__("re").escape(message) + "$"):
            parse_column_map(text)
