"""Import: Binance spot trade dumps -> a log, beside pyarrow's read+write floor and a pandas job."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bench.common import Report, child_peak_rss_mb, header

ROWS = 10_000_000
FILES = 5
OVERLAP = 10_000  # each file repeats the previous one's last rows, as a re-download would
NAMES = ["id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"]


def write_spot_file(path: Path, first_id: int, n: int, seed: int) -> None:
    """Binance spot trades exactly as published (no header, µs, True/False), made with
    pyarrow's string kernels so 10M rows take seconds. A trade's time follows from its id
    (three trades per µs stamp, as one taker order filling three makers)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n)
    us = 1_735_689_600_000_000 + ids // 3 * 8_000
    cents = 9_400_000 + np.cumsum(rng.integers(-3, 4, n))
    lots = rng.integers(1, 99_999, n)

    def text(values: np.ndarray) -> pa.Array:
        return pc.cast(pa.array(values), pa.string())

    price = pc.binary_join_element_wise(text(cents // 100), pc.utf8_lpad(text(cents % 100), 2, "0"),
                                        ".")
    price = pc.binary_join_element_wise(price, "000000", "")
    qty = pc.binary_join_element_wise("0", pc.utf8_lpad(text(lots), 5, "0"), ".")
    qty = pc.binary_join_element_wise(qty, "000", "")
    maker = pc.if_else(pa.array(rng.random(n) < 0.45), "True", "False")
    table = pa.table({"id": ids, "price": price, "qty": qty, "quoteQty": price, "time": us,
                      "isBuyerMaker": maker, "isBestMatch": pa.repeat("True", n)})
    pacsv.write_csv(table, str(path), pacsv.WriteOptions(include_header=False,
                                                          quoting_style="none"))


def make_files(work: Path, rows: int, files: int) -> list[Path]:
    per = rows // files
    paths = []
    for i in range(files):
        first = 1_000 + i * per - (OVERLAP if i else 0)
        path = work / f"BTCUSDT-trades-2025-01-{i + 1:02d}.csv"
        write_spot_file(path, first, per + (OVERLAP if i else 0), seed=i)
        paths.append(path)
    return paths


def _seconds(stdout: str) -> float:
    return float(next(x.split()[1] for x in stdout.splitlines() if x.startswith("SECONDS")))


def ticktape_child(files: list[Path], log: Path) -> tuple[float, float]:
    """ticktape's import in a fresh process: (seconds, peak RSS MB)."""
    rss, out = child_peak_rss_mb(
        "import time\nfrom pathlib import Path\n"
        "from recorder.importers import ImportConfig, import_files\n"
        "t = time.perf_counter()\n"
        f"r = import_files(ImportConfig(log=Path({str(log)!r}), "
        f"files=tuple(Path(p) for p in {[str(f) for f in files]!r})))\n"
        "print('SECONDS', time.perf_counter() - t)\nprint('EVENTS', r.events)\n")
    return _seconds(out), rss


def floor_child(files: list[Path], out: Path) -> tuple[float, float]:
    """The floor: pyarrow.csv.read_csv of each file and pq.write_table, nothing else."""
    rss, stdout = child_peak_rss_mb(
        "import time\nimport pyarrow.csv as c, pyarrow.parquet as pq\n"
        f"names = {NAMES!r}\nt = time.perf_counter()\n"
        f"for i, f in enumerate({[str(f) for f in files]!r}):\n"
        "    table = c.read_csv(f, read_options=c.ReadOptions(column_names=names))\n"
        f"    pq.write_table(table, {str(out)!r} + str(i) + '.parquet')\n"
        "print('SECONDS', time.perf_counter() - t)\n")
    return _seconds(stdout), rss


def pandas_child(files: list[Path], out: Path) -> tuple[float, float]:
    """What a pandas user writes for the same job."""
    rss, stdout = child_peak_rss_mb(
        "import time\nimport numpy as np, pandas as pd\n"
        f"names = {NAMES!r}\nt = time.perf_counter()\n"
        f"df = pd.concat([pd.read_csv(f, header=None, names=names) for f in "
        f"{[str(f) for f in files]!r}], ignore_index=True)\n"
        "df['side'] = np.where(df['isBuyerMaker'], 'sell', 'buy')\n"
        "df['ts'] = pd.to_datetime(df['time'], unit='us', utc=True)\n"
        "df = df.sort_values(['ts', 'id'], kind='stable').drop_duplicates('id')\n"
        "df = df.assign(symbol='BTC-USDT', trade_id=df['id'].astype(str), venue='binance')\n"
        "df[['ts', 'symbol', 'price', 'qty', 'side', 'trade_id', 'venue']]"
        f".to_parquet({str(out)!r})\n"
        "print('SECONDS', time.perf_counter() - t)\n")
    return _seconds(stdout), rss


def run(quick: bool = False) -> Report:
    rows = 2_000_000 if quick else ROWS
    files_n = 4 if quick else FILES
    rep = header(f"Import ({rows:,} Binance spot trades in {files_n} CSV files, overlapping)")
    work = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    try:
        files = make_files(work, rows, files_n)
        mb = sum(f.stat().st_size for f in files) / 1e6
        ours, rss_all = ticktape_child(files, work / "log")
        floor, _ = floor_child(files, work / "floor")
        theirs, rss_pandas = pandas_child(files, work / "pandas.parquet")
        rep.add("import rows/s vs pyarrow read_csv + write_table", rows / ours, "rows/s",
                baseline=rows / floor, baseline_name="read_csv + pq.write_table, same files",
                target=">= 0.5x")
        rep.add("import rows/s vs pandas job", rows / ours, "rows/s", baseline=rows / theirs,
                baseline_name="pandas read_csv, sort, dedupe, to_parquet", target=">= 1x")
        shutil.rmtree(work / "log")
        _, rss_one = ticktape_child(files[:1], work / "log")
        base, _ = child_peak_rss_mb("import numpy, pandas, pyarrow.parquet, recorder.importers")
        # One file is rows/files rows (2M in a full run: past one 1M-row segment, so the
        # writer's open segment is at its largest in both figures).
        rep.add(f"peak RSS importing 1 file ({mb / files_n:,.0f} MB of CSV)", rss_one, "MB",
                baseline=base, baseline_name="interpreter + imports only",
                higher_is_better=False)
        rep.add(f"peak RSS importing {files_n} files ({mb:,.0f} MB of CSV)", rss_all, "MB",
                baseline=rss_pandas, baseline_name="the pandas job, same files",
                higher_is_better=False, target="flat in input size")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.save()
    return rep
