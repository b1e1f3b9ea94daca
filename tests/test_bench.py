"""The benchmark entry point runs (figures are measured, never asserted: bench/README.md)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_record_quick_prints_figures_beside_baselines() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "record", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if " vs " in line]
    assert any("naive per-tick loop" in r for r in rows)
    assert any("numpy+write_table floor" in r for r in rows)
    assert all(r.rstrip().split()[-1] for r in rows)


def test_bench_rejects_unknown_suites() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown suite" in result.stderr
