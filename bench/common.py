"""Helpers shared by the benchmarks: timing, peak RSS of a child process, the result table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# TICKTAPE_BENCH_RESULTS: another folder for the JSON results (tests/test_bench.py uses a tmp dir).
RESULTS = Path(os.environ.get("TICKTAPE_BENCH_RESULTS") or ROOT / "bench" / "results")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    out = fn()
    return time.perf_counter() - began, out


def child_peak_rss_mb(code: str, *, env: dict[str, str] | None = None,
                      timeout: float = 900) -> tuple[float, str]:
    """Run Python code in a fresh process; return its peak RSS (MB) and its stdout."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec from the parent.
    wrapper = (code + "\nfor _l in open('/proc/self/status'):\n"
               "    if _l.startswith('VmHWM'): print('PEAK_RSS_KB', _l.split()[1])\n")
    out = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})},
                         check=True).stdout
    kb = next(int(line.split()[1]) for line in out.splitlines() if line.startswith("PEAK_RSS"))
    return kb / 1024, out


@dataclass
class Report:
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, figure: str, value: float, unit: str, *, baseline: float | None = None,
            baseline_name: str = "", higher_is_better: bool = True, target: str = "") -> None:
        ratio = None
        if baseline:
            ratio = value / baseline if higher_is_better else baseline / value
        self.rows.append(dict(figure=figure, value=value, unit=unit, baseline=baseline,
                              baseline_name=baseline_name, ratio=ratio, target=target))
        base = f"{baseline:,.3f} {unit} ({baseline_name})" if baseline else "-"
        rat = f"{ratio:.2f}x" if ratio is not None else ""
        shown = f"{value:>14.3e}" if value and abs(value) < 0.01 else f"{value:>14,.3f}"
        print(f"  {figure:<44} {shown} {unit:<10} vs {base:<46} {rat:>8}  {target}",
              flush=True)

    def save(self) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = self.title.split()[0].lower()
        (RESULTS / f"{name}.json").write_text(json.dumps(self.rows, indent=2))


def header(title: str) -> Report:
    print(f"\n== {title}", flush=True)
    print("  ratio > 1 means ticktape is better than the baseline", flush=True)
    return Report(title)
