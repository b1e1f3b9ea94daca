"""Recorder: fast-mode ticks/s, bytes/tick and peak RSS beside a naive loop and the numpy+pyarrow floor."""

from __future__ import annotations

import io
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Report, child_peak_rss_mb, header, timed
from recorder.config import SimConfig
from recorder.log import PARQUET_OPTIONS
from recorder.record import RecordConfig, record

TICKS = 10_000_000
NAIVE_TICKS = 300_000


def naive_loop(n: int, path: Path) -> None:
    """What a tutorial writes (the seed design's numpy random walk), one tick at a time into a
    list of dicts, then pandas `to_parquet`."""
    from datetime import UTC, datetime, timedelta

    np.random.seed(42)
    price, t = 65_000.0, datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        t += timedelta(seconds=float(np.random.exponential(1 / 20.0)))
        price = price * (1 + np.random.normal(0.0, 0.0001))
        rows.append({"seq": i, "ts": t, "symbol": "BTC-USD", "price": round(price, 2),
                     "size": round(float(np.random.lognormal(-5.3, 1.2)), 4),
                     "side": "buy" if np.random.random() < 0.5 else "sell"})
    pd.DataFrame(rows).to_parquet(path)


def numpy_floor(n: int, path: Path) -> int:
    """The floor: one vectorized numpy generation and one pq.write_table of the same columns."""
    rng = np.random.default_rng(42)
    gaps = np.maximum(np.rint(rng.exponential(50_000.0, n)), 1).astype(np.int64) * 1_000
    ts = 1_704_067_200_000_000_000 + np.cumsum(gaps)
    logp = math.log(65_000.0) + np.cumsum(0.55 * np.sqrt(gaps / 3.15e16) * rng.standard_normal(n))
    price = np.round(np.rint(np.exp(logp) / 0.01) * 0.01, 2)
    size = np.round(np.maximum(np.rint(rng.lognormal(math.log(0.005), 1.2, n) / 1e-4), 1) * 1e-4, 4)
    side = pa.DictionaryArray.from_arrays(pa.array((rng.random(n) < 0.5).astype(np.int8)),
                                          pa.array(["buy", "sell"])).cast(pa.string())
    symbol = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)),
                                            pa.array(["BTC-USD"])).cast(pa.string())
    table = pa.table({"seq": np.arange(n), "ts": pa.array(ts).cast(pa.timestamp("ns", "UTC")),
                      "symbol": symbol, "price": price, "size": size, "side": side})
    pq.write_table(table, path, row_group_size=1_000_000, **PARQUET_OPTIONS)
    return table.num_rows


def default_bytes_per_tick(log: Path) -> float:
    """pyarrow's defaults on the same first segment, for the encoding comparison."""
    table = pq.read_table(sorted(log.glob("*.parquet"))[0])
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), buf)
    return len(buf.getvalue()) / table.num_rows


def run(quick: bool = False) -> Report:
    ticks = 1_000_000 if quick else TICKS
    rep = header(f"Recorder (fast mode, {ticks:,} ticks, default BTC-USD simulator)")
    work = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    try:
        secs, _ = timed(lambda: record(RecordConfig(path=work / "log", sim=SimConfig(seed=42),
                                                    ticks=ticks)))
        ours = ticks / secs
        size = sum(p.stat().st_size for p in (work / "log").glob("*.parquet"))
        naive_n = NAIVE_TICKS // (10 if quick else 1)
        naive_s, _ = timed(lambda: naive_loop(naive_n, work / "naive.parquet"))
        floor_s, _ = timed(lambda: numpy_floor(ticks, work / "floor.parquet"))
        rep.add("record ticks/s vs naive per-tick loop", ours, "ticks/s",
                baseline=naive_n / naive_s, baseline_name=f"naive loop, {naive_n:,} ticks",
                target=">= 40x")
        rep.add("record ticks/s vs numpy+write_table floor", ours, "ticks/s",
                baseline=ticks / floor_s, baseline_name="numpy + one pq.write_table",
                target=">= 0.5x")
        rep.add("bytes/tick", size / ticks, "B/tick", baseline=default_bytes_per_tick(work / "log"),
                baseline_name="pyarrow defaults, same rows", higher_is_better=False,
                target="<= 7.5")
        for n in ([2_000_000] if quick else [10_000_000, 50_000_000]):
            shutil.rmtree(work / "rss", ignore_errors=True)
            rss, _ = child_peak_rss_mb(
                "from pathlib import Path\nfrom recorder.config import SimConfig\n"
                "from recorder.record import RecordConfig, record\n"
                f"record(RecordConfig(path=Path({str(work / 'rss')!r}), sim=SimConfig(seed=1), "
                f"ticks={n}))")
            base, _ = child_peak_rss_mb("import numpy, pandas, pyarrow.parquet, recorder.record")
            rep.add(f"peak RSS recording {n:,} ticks", rss, "MB", baseline=base,
                    baseline_name="interpreter + imports only", higher_is_better=False,
                    target="<= 500 MB, flat in length")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.save()
    return rep
