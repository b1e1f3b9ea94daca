"""Analysis: SMA beside numpy's memory floor and pandas rolling; report time, size, peak RSS."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.indicators import sma
from bench.common import Report, child_peak_rss_mb, header, timed

N = 10_000_000


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    return min(timed(fn)[0] for _ in range(repeat))


def run(quick: bool = False) -> Report:
    n = 1_000_000 if quick else N
    rep = header(f"Analysis (SMA over {n:,} prices; reports)")
    price = 65_000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-4, n)))
    series = pd.Series(price)
    floor = best_of(lambda: np.add(price, 1.0))
    for w in (5, 200):
        ours = best_of(lambda w=w: sma(price, w))
        theirs = best_of(lambda w=w: series.rolling(w).mean())
        ref = series.rolling(w).mean().to_numpy()
        err = float(np.nanmax(np.abs(sma(price, w) - ref) / ref))
        rep.add(f"SMA({w}) time vs pandas rolling().mean()", ours * 1e3, "ms",
                baseline=theirs * 1e3, baseline_name="pandas rolling mean",
                higher_is_better=False, target="<= 0.5x pandas time (ratio >= 2)")
        rep.add(f"SMA({w}) time vs memory floor", ours * 1e3, "ms", baseline=floor * 1e3,
                baseline_name="np.add over the same array", higher_is_better=False)
        rep.add(f"SMA({w}) max relative difference to pandas", err, "rel", target="<= 1e-9")
    work = Path(tempfile.mkdtemp(prefix="ticktape-bench-"))
    try:
        for ticks in ([2_000_000] if quick else [10_000_000, 50_000_000]):
            log = work / f"log{ticks}"
            code = ("from pathlib import Path\nfrom recorder.config import SimConfig\n"
                    "from recorder.record import RecordConfig, record\n"
                    f"record(RecordConfig(path=Path({str(log)!r}), sim=SimConfig(seed=1), "
                    f"ticks={ticks}))\n")
            child_peak_rss_mb(code)
            out = work / "report.html"
            rss, stdout = child_peak_rss_mb(
                "import time\nfrom pathlib import Path\n"
                "from analysis.report import ReportConfig, build_report\n"
                "t = time.perf_counter()\n"
                f"build_report(ReportConfig(log=Path({str(log)!r}), out=Path({str(out)!r})))\n"
                "print('SECONDS', time.perf_counter() - t)\n")
            seconds = float(next(x.split()[1] for x in stdout.splitlines()
                                 if x.startswith("SECONDS")))
            read_s, _ = timed(lambda log=log: sum(
                b.num_rows for b in __import__("recorder.log", fromlist=["Log"])
                .Log(log).iter_batches(batch_rows=262_144)))
            rep.add(f"report of {ticks:,} ticks: time", seconds, "s", baseline=read_s,
                    baseline_name="reading the log alone", higher_is_better=False,
                    target="<= 5 s at 10M")
            rep.add(f"report of {ticks:,} ticks: HTML size", out.stat().st_size / 2**20, "MiB",
                    target="<= 6 MB at 10M")
            base, _ = child_peak_rss_mb("import analysis.report")
            rep.add(f"report of {ticks:,} ticks: peak RSS", rss, "MB", baseline=base,
                    baseline_name="interpreter + imports only", higher_is_better=False,
                    target="<= 500 MB at 50M")
            shutil.rmtree(log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep.save()
    return rep
