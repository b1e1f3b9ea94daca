"""`ticktape import` as users run it: real files in the exchanges' published layouts, the
resulting log checked against the format's rules and against an independent pandas job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from recorder.importers import ImportConfig, import_files
from recorder.log import Log, verify_log
from tests.conftest import make_log, run_cli
from tests.import_helpers import (
    SPOT_TRADES,
    futures_aggtrades_csv,
    spot_aggtrades_csv,
    spot_trades_csv,
    trades,
    usdm_trades_csv,
    write_gz,
    write_zip,
)

LOG_COLUMNS = ["ts", "symbol", "price", "size", "side", "trade_id", "venue"]


def read_log(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path).sort_values("seq").reset_index(drop=True)
    assert (df["seq"].to_numpy() == np.arange(len(df))).all()
    return df


def pandas_binance(paths: list[Path], *, names: tuple[str, ...], header: bool,
                   unit: Literal["ms", "us"],
                   symbol: str, venue: str, id_col: str = "id", time_col: str = "time",
                   qty_col: str = "qty", maker_col: str = "isBuyerMaker") -> pd.DataFrame:
    """The same job done independently: read, drop duplicate ids, sort by (time, id), map
    isBuyerMaker to the taker side."""
    frames = [pd.read_csv(p, header=0 if header else None, names=list(names)) for p in paths]
    df = pd.concat(frames, ignore_index=True).drop_duplicates(subset=[id_col], keep="first")
    df = df.assign(ts=pd.to_datetime(df[time_col], unit=unit, utc=True).astype("datetime64[ns, UTC]"))
    df = df.sort_values(["ts", id_col], kind="stable").reset_index(drop=True)
    return pd.DataFrame({
        "ts": df["ts"], "symbol": symbol, "price": df["price"].astype(float),
        "size": df[qty_col].astype(float),
        "side": np.where(df[maker_col].astype(str).str.lower() == "true", "sell", "buy"),
        "trade_id": df[id_col].astype(str), "venue": venue,
    })


def assert_log_equals(log: Path, expected: pd.DataFrame) -> None:
    got = read_log(log)[LOG_COLUMNS]
    pd.testing.assert_frame_equal(got.astype(object), expected[LOG_COLUMNS].astype(object))


def last_line(text: str) -> str:
    assert "Traceback" not in text
    return text.strip().splitlines()[-1]


# -- Binance -------------------------------------------------------------------------------
def test_binance_spot_zip_with_checksum_recognised(tmp_path: Path) -> None:
    t = trades(3_000, seed=3)
    zipped = write_zip(tmp_path / "BTCUSDT-trades-2025-01-01.zip", spot_trades_csv(t))
    result = run_cli("import", str(tmp_path / "btc"), str(zipped))
    assert result.returncode == 0, result.stderr
    assert "format     binance-trades (spot), recognised from the content" in result.stdout
    assert "imported   3,000 events from 1 file(s)" in result.stdout
    assert "symbols    BTC-USDT (BTCUSDT)" in result.stdout
    assert "checksums  1 verified" in result.stdout
    assert verify_log(tmp_path / "btc").ok
    info = run_cli("info", str(tmp_path / "btc"), "--json")
    meta = json.loads(info.stdout)
    assert meta["events"] == 3_000 and meta["symbols"] == ["BTC-USDT"]
    assert meta["ticktape"]["source"] == "import:binance-trades"
    csv = tmp_path / "plain.csv"
    csv.write_text(spot_trades_csv(t))
    assert_log_equals(tmp_path / "btc", pandas_binance(
        [csv], names=SPOT_TRADES, header=False, unit="us", symbol="BTC-USDT", venue="binance"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "BTCUSDT-trades-2025-01-01.zip", "BTCUSDT-trades-2025-01-01.zip.CHECKSUM", "btc",
        "plain.csv"]  # no staging directory left behind


def test_binance_spot_ms_and_capitalised_bools_without_checksum(tmp_path: Path) -> None:
    t = trades(1_500, seed=4, start_us=1_704_067_200_000_000, ms_grid=True)
    path = write_zip(tmp_path / "ETHBTC-trades-2024-01-01.zip", spot_trades_csv(t, unit="ms"),
                     checksum=False)
    report = import_files(ImportConfig(log=tmp_path / "eth", files=(path,)))
    assert report.format == "binance-trades" and report.checksums_verified == 0
    plain = tmp_path / "x.csv"
    plain.write_text(spot_trades_csv(t, unit="ms"))
    assert_log_equals(tmp_path / "eth", pandas_binance(
        [plain], names=SPOT_TRADES, header=False, unit="ms", symbol="ETH-BTC", venue="binance"))


def test_binance_futures_header_lowercase_bools_and_gz(tmp_path: Path) -> None:
    t = trades(2_000, seed=5, ms_grid=True)
    path = write_gz(tmp_path / "BTCUSDT-trades-2024-06.csv.gz", usdm_trades_csv(t))
    report = import_files(ImportConfig(log=tmp_path / "f", files=(path,)))
    assert (report.format, report.variants, report.venues) == (
        "binance-trades", ["usdm"], ["binance-futures"])
    names = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker")
    assert_log_equals(tmp_path / "f", pandas_binance(
        [path], names=names, header=True, unit="ms", symbol="BTC-USDT",
        venue="binance-futures", maker_col="is_buyer_maker"))
    # The same rows without the header (files before 2022) import identically.
    old = write_gz(tmp_path / "BTCUSDT-trades-2021-06.csv.gz", usdm_trades_csv(t, header=False))
    import_files(ImportConfig(log=tmp_path / "old", files=(old,)))
    pd.testing.assert_frame_equal(read_log(tmp_path / "old"), read_log(tmp_path / "f"))


def test_binance_aggtrades_spot_and_futures(tmp_path: Path) -> None:
    t = trades(1_000, seed=6)
    spot = write_zip(tmp_path / "SOLUSDC-aggTrades-2025-02-01.zip", spot_aggtrades_csv(t))
    fut = write_zip(tmp_path / "BTCUSD_PERP-aggTrades-2024-02-01.zip", futures_aggtrades_csv(t))
    result = run_cli("import", str(tmp_path / "s"), str(spot), "--json")
    summary = json.loads(result.stdout)
    assert summary["format"] == "binance-aggtrades" and summary["detected"] is True
    assert summary["symbols"] == ["SOL-USDC"] and summary["venues"] == ["binance"]
    agg = ("agg_trade_id", "price", "quantity", "first", "last", "transact_time", "maker", "best")
    plain = tmp_path / "agg.csv"
    plain.write_text(spot_aggtrades_csv(t))
    assert_log_equals(tmp_path / "s", pandas_binance(
        [plain], names=agg, header=False, unit="us", symbol="SOL-USDC", venue="binance",
        id_col="agg_trade_id", time_col="transact_time", qty_col="quantity", maker_col="maker"))
    report = import_files(ImportConfig(log=tmp_path / "f", files=(fut,),
                                       format="binance-aggtrades"))
    assert report.symbols == {"BTC-USD-PERP": "BTCUSD_PERP"}
    assert report.venues == ["binance-delivery"] and report.variants == ["futures"]
    assert read_log(tmp_path / "f")["trade_id"].tolist() == [str(i) for i in t.ids]


def test_taker_side_is_opposite_of_buyer_maker(tmp_path: Path) -> None:
    rows = ("1,100.0,1.0,100.0,1735689600000001,True,True\n"
            "2,101.0,1.0,101.0,1735689600000002,False,True\n")
    path = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    path.write_text(rows)
    import_files(ImportConfig(log=tmp_path / "l", files=(path,)))
    assert read_log(tmp_path / "l")["side"].tolist() == ["sell", "buy"]


def test_files_in_any_order_overlapping_become_one_log(tmp_path: Path) -> None:
    t = trades(9_000, seed=7)
    day1 = write_zip(tmp_path / "BTCUSDT-trades-2025-01-01.zip", spot_trades_csv(t.part(0, 4_000)))
    day2 = write_zip(tmp_path / "BTCUSDT-trades-2025-01-02.zip",
                     spot_trades_csv(t.part(4_000, 9_000)))
    # A re-download overlapping both days: 1,500 + 1,000 rows already in the others.
    over = write_zip(tmp_path / "BTCUSDT-trades-2025-01-01b.zip", spot_trades_csv(t.part(2_500, 5_000)),
                     checksum=False)
    result = run_cli("import", str(tmp_path / "m"), str(day2), str(over), str(day1), "--json",
                     "--symbol", "BTCUSDT")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["events"] == 9_000 and summary["duplicates_dropped"] == 2_500
    assert summary["files"] == 3 and summary["checksums_verified"] == 2
    assert verify_log(tmp_path / "m").ok
    plain = []
    for name, part in (("a", t.part(0, 4_000)), ("b", t.part(4_000, 9_000)),
                       ("c", t.part(2_500, 5_000))):
        (tmp_path / f"{name}.csv").write_text(spot_trades_csv(part))
        plain.append(tmp_path / f"{name}.csv")
    assert_log_equals(tmp_path / "m", pandas_binance(
        plain, names=SPOT_TRADES, header=False, unit="us", symbol="BTC-USDT", venue="binance"))
    # The order of the arguments does not matter: byte-identical segments.
    import_files(ImportConfig(log=tmp_path / "m2", files=(day1, over, day2), symbol="BTCUSDT"))
    assert [p.read_bytes() for p in sorted((tmp_path / "m").glob("seg-*"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "m2").glob("seg-*"))]


def test_unsorted_file_is_sorted_in_runs_bounded_blocks(tmp_path: Path) -> None:
    """Time order breaks after the first blocks: the import sorts the file in runs and starts
    over; small blocks and runs make it a many-way merge."""
    t = trades(6_000, seed=8)
    order = np.arange(6_000)
    rng = np.random.default_rng(1)
    order[3_000:] = rng.permutation(order[3_000:])  # the second half shuffled
    shuffled = type(t)(t.ids[order], t.us[order], t.price[order], t.qty[order],
                       t.buyer_maker[order])
    path = tmp_path / "BTCUSDT-trades-2025-01-03.csv"
    path.write_text(spot_trades_csv(shuffled))
    sorted_path = tmp_path / "BTCUSDT-trades-2025-01-04.csv"  # overlaps, in order
    sorted_path.write_text(spot_trades_csv(t.part(5_000, 6_000)))
    report = import_files(ImportConfig(log=tmp_path / "u", files=(path, sorted_path),
                                       block_bytes=8_192, run_rows=700, segment_rows=2_500))
    assert report.sorted_in_runs == [str(path)]
    assert report.events == 6_000 and report.duplicates_dropped == 1_000
    assert verify_log(tmp_path / "u").ok and Log(tmp_path / "u").info().segments == 3
    plain = tmp_path / "all.csv"
    plain.write_text(spot_trades_csv(t))
    assert_log_equals(tmp_path / "u", pandas_binance(
        [plain], names=SPOT_TRADES, header=False, unit="us", symbol="BTC-USDT", venue="binance"))


def test_progress_reports_raw_bytes_up_to_the_total(tmp_path: Path) -> None:
    paths = [write_zip(tmp_path / f"BTCUSDT-trades-2025-01-0{i + 1}.zip",
                       spot_trades_csv(trades(4_000, seed=i, first_id=1_000 + 4_000 * i,
                                              start_us=1_735_689_600_000_000 + i * 10**10)))
             for i in range(3)]
    calls: list[tuple[int, int | None]] = []
    import_files(ImportConfig(log=tmp_path / "p", files=tuple(paths), block_bytes=16_384),
                 progress=lambda done, total: calls.append((done, total)))
    total = sum(p.stat().st_size for p in paths)
    assert len(calls) > 3 and {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == total


# -- errors --------------------------------------------------------------------------------
def _good_rows(n: int = 50) -> list[str]:
    return spot_trades_csv(trades(n, seed=9)).splitlines()


@pytest.mark.parametrize(("line", "bad", "message"), [
    (7, "1006,abc,0.1,1.0,1735689600000100,True,True", "price 'abc' is not a number"),
    (9, "1008,94000.0,0.1,1.0", "expected 7 fields (id,price,qty,quote_qty,time,buyer_maker,best), "
                                "got 4: '1008,94000.0,0.1,1.0'"),
    (40, "1039,-3.5,0.1,1.0,1735689600090000,True,True", "price must be a finite number > 0, got -3.5"),
    (12, "", "id is empty (a blank line)"),
    (30, "1029,94000.0,0.1,1.0,1735689600090,True,True",
     "time 1735689600090 is not in microseconds like the first row of this file"),
    (20, "1019,94000.0,0.1,1.0,1735689600090000,maybe,True", "buyer_maker 'maybe' is not true or false"),
])
def test_malformed_row_names_file_and_line_and_leaves_no_log(
        tmp_path: Path, line: int, bad: str, message: str) -> None:
    rows = _good_rows()
    rows[line - 1] = bad
    path = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    path.write_text("\n".join(rows) + "\n")
    result = run_cli("import", str(tmp_path / "out"), str(path))
    assert result.returncode == 2
    assert last_line(result.stderr) == f"error: {path}:{line}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_malformed_row_found_late_in_a_large_file(tmp_path: Path) -> None:
    """Past the first blocks, after rows were already merged: still file:line, still no log."""
    rows = spot_trades_csv(trades(40_000, seed=10)).splitlines()
    fields = rows[35_123].split(",")
    rows[35_123] = ",".join([*fields[:5], "Yes", fields[6]])
    path = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(Exception) as exc:
        import_files(ImportConfig(log=tmp_path / "out", files=(path,), block_bytes=65_536,
                                  segment_rows=10_000))
    assert str(exc.value) == f"{path}:35124: buyer_maker 'Yes' is not true or false"
    assert type(exc.value).__name__ == "MalformedRowError" and exc.value.exit_code == 2  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_checksum_mismatch_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "BTCUSDT-trades-2025-01-01.zip", spot_trades_csv(trades(100)))
    sidecar = tmp_path / "BTCUSDT-trades-2025-01-01.zip.CHECKSUM"
    sidecar.write_text("0" * 64 + "  BTCUSDT-trades-2025-01-01.zip\n")
    result = run_cli("import", str(tmp_path / "out"), str(path))
    assert result.returncode == 2
    actual = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert last_line(result.stderr) == (
        f"error: {path}: sha256 {actual} does not match BTCUSDT-trades-2025-01-01.zip.CHECKSUM "
        f"({'0' * 64}); the file is damaged or incomplete: download it again")
    assert not (tmp_path / "out").exists()
    sidecar.write_text("not a checksum\n")
    assert last_line(run_cli("import", str(tmp_path / "out"), str(path)).stderr) == \
        f"error: {sidecar}: not a sha256sum line ('<64 hex digits>  <name>')"


def test_foreign_files_are_refused_with_one_line(tmp_path: Path) -> None:
    png = tmp_path / "chart.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    other = tmp_path / "orders.csv"
    other.write_text("order,qty\n1,2\n")
    two = tmp_path / "BTCUSDT-trades-2025-01-01.zip"
    import zipfile
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "1,2\n")
        zf.writestr("b.csv", "1,2\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    nameless = tmp_path / "dump.csv"
    nameless.write_text(spot_trades_csv(trades(5)))
    tardis = write_gz(tmp_path / "t.csv.gz", "exchange,symbol,timestamp,local_timestamp,id,side,"
                                             "price,amount\nbybit,BTCUSDT,1,1,a,buy,1,1\n")
    cases = [
        ([str(png)], f"error: {png}: is not a CSV file (binary content)"),
        ([str(other)], f"error: {other}: format not recognised (first line 'order,qty'); known "
                       "formats: binance-trades, binance-aggtrades, tardis-trades, bybit-trades; "
                       "for another CSV use --format csv --map"),
        ([str(two)], f"error: {two}: a zip to import holds exactly one CSV; this one holds 2 files"),
        ([str(empty)], f"error: {empty}: is empty"),
        ([str(nameless)], f"error: {nameless}: Binance dumps do not contain their symbol; name the "
                          "file as Binance does (e.g. BTCUSDT-trades-2025-01-01.zip) or pass --symbol"),
        ([str(tardis), "--format", "binance-trades"],
         f"error: {tardis}: is tardis-trades, not binance-trades; leave out --format to import it "
         "as what it is"),
        ([str(nameless), str(tardis), "--symbol", "BTCUSDT"],
         "error: the files are in different formats (dump.csv: binance-trades; t.csv.gz: "
         "tardis-trades); import each format into its own log"),
        ([str(tmp_path / "missing.zip")], f"error: {tmp_path / 'missing.zip'}: no such file"),
        ([str(nameless), "--map", "ts=t"], "error: --map: only for --format csv"),
    ]
    for args, message in cases:
        result = run_cli("import", str(tmp_path / "out"), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert last_line(result.stderr) == message
        assert not (tmp_path / "out").exists()


def test_existing_log_untouched_unless_overwrite(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=200)
    before = {p.name: p.read_bytes() for p in log.iterdir()}
    good = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    good.write_text(spot_trades_csv(trades(300)))
    bad = tmp_path / "BTCUSDT-trades-2025-01-02.csv"
    rows = spot_trades_csv(trades(300, first_id=5_000, start_us=1_735_776_000_000_000)).splitlines()
    rows[99] = rows[99].rsplit(",", 1)[0]
    bad.write_text("\n".join(rows) + "\n")
    result = run_cli("import", str(log), str(good))
    assert result.returncode == 2
    assert last_line(result.stderr) == f"error: log {log} exists; pass --overwrite to replace it"
    result = run_cli("import", str(log), str(good), str(bad), "--overwrite")
    assert result.returncode == 2 and f"{bad}:100: expected 7 fields" in last_line(result.stderr)
    assert {p.name: p.read_bytes() for p in log.iterdir()} == before
    result = run_cli("import", str(log), str(good), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert Log(log).info().events == 300 and Log(log).metadata["source"] == "import:binance-trades"
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name, bad.name, "btc"]


def test_import_help_is_readable() -> None:
    result = run_cli("import", "--help")
    assert result.returncode == 0
    for text in ("binance-trades", "--map", "--time-unit", "--side-from", "--overwrite",
                 "docs/import.md", "taker"):
        assert text in result.stdout
