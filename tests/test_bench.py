"""The benchmark entry point runs and reports well-formed figures (their size is never asserted:
bench/README.md)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# One printed figure with its same-run baseline (bench/common.py, Report.add):
#   "  <figure> <value> <unit> vs <baseline> <unit> (<baseline name>) <ratio>x  <target>"
ROW = re.compile(r"^  (?P<figure>\S.*?) +(?P<value>[\d,]+\.\d+(?:e[+-]\d+)?) (?P<unit>\S+) +vs "
                 r"(?P<baseline>[\d,]+\.\d+) (?P=unit) \((?P<baseline_name>.+)\) +"
                 r"(?P<ratio>\d+\.\d+)x {2}(?P<target>.*)$")
PREAMBLE = ("== ", "  ratio > 1 means")


def _positive(text: str) -> float:
    value = float(text.replace(",", ""))
    assert math.isfinite(value) and value > 0, text
    return value


def test_bench_record_quick_prints_figures_beside_baselines(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "record", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TICKTAPE_BENCH_RESULTS": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith(PREAMBLE)]
    rows = []
    for line in lines:  # every figure of this suite has a baseline and a ratio
        match = ROW.match(line)
        assert match is not None, f"figure line does not parse: {line!r}"
        rows.append(match)
    figures = [r["figure"] for r in rows]
    assert any("naive per-tick loop" in f for f in figures)
    assert any("numpy+write_table floor" in f for f in figures)

    saved = json.loads((tmp_path / "recorder.json").read_text())
    assert [s["figure"] for s in saved] == figures
    for printed, kept in zip(rows, saved, strict=True):
        value, baseline, ratio = (_positive(printed[k]) for k in ("value", "baseline", "ratio"))
        assert kept["unit"] == printed["unit"] and kept["baseline_name"] == printed["baseline_name"]
        # Printed with 3 decimals (3 significant digits below 0.01), the ratio with 2.
        assert kept["value"] == pytest.approx(value, rel=1e-3, abs=5e-4)
        assert kept["baseline"] == pytest.approx(baseline, rel=1e-3, abs=5e-4)
        assert kept["ratio"] == pytest.approx(ratio, abs=5e-3)
        for key in ("value", "baseline", "ratio"):
            assert math.isfinite(kept[key]) and kept[key] > 0, (kept["figure"], key)
        # The ratio is the figure against its baseline, whichever way is better.
        assert kept["ratio"] in (pytest.approx(kept["value"] / kept["baseline"]),
                                 pytest.approx(kept["baseline"] / kept["value"])), kept


def test_bench_rejects_unknown_suites() -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown suite" in result.stderr
