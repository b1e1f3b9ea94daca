"""`ticktape compact`: many small segments become few large ones, atomically, losing nothing."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from recorder.errors import LogLockedError, NotALogError
from recorder.log import Log, LogWriter, compact_log, verify_log
from tests.conftest import make_log, run_cli


def _table(path: Path) -> pa.Table:
    return pq.read_table(path).sort_by("seq")


def test_compact_merges_segments_and_keeps_every_event(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=25_000, segment_rows=1_000, symbols="BTC-USD,ETH-USD")
    before = _table(log)
    metadata = Log(log).metadata
    result = run_cli("compact", str(log), "--segment-rows", "10000", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["segments_before"] == 25 and report["segments_after"] == 3 and report["compacted"]
    assert sorted(p.name for p in log.iterdir()) == [
        "seg-000000000000.parquet", "seg-000000010000.parquet", "seg-000000020000.parquet"]
    assert _table(log).equals(before)
    assert Log(log).metadata == metadata and verify_log(log).ok
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    again = run_cli("compact", str(log), "--segment-rows", "10000")
    assert again.returncode == 0 and "already compact" in again.stdout


def test_compact_refuses_live_single_file_and_foreign(tmp_path: Path) -> None:
    with LogWriter(tmp_path / "live", {"source": "test"}), pytest.raises(LogLockedError):
        compact_log(tmp_path / "live")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    result = run_cli("compact", str(tmp_path / "notes"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    log = make_log(tmp_path / "btc", ticks=2_000, segment_rows=500)
    single = tmp_path / "one.parquet"
    pq.write_table(pq.read_table(log), single)
    with pytest.raises(NotALogError, match="single-file"):
        compact_log(single)
    bad = run_cli("compact", str(log), "--segment-rows", "0")
    assert bad.returncode == 2 and "--segment-rows" in bad.stderr


def test_readers_during_compaction_see_old_or_new_never_a_mix(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=60_000, segment_rows=500)
    expected = _table(log)
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def read_repeatedly() -> None:
        while not stop.is_set():
            try:
                table = ds.dataset(log, format="parquet").to_table(columns=["seq"])
            except (OSError, pa.ArrowInvalid) as exc:  # a file vanished mid-read: retry
                failures.append(type(exc).__name__)
                continue
            seq = np.sort(table.column(0).to_numpy())
            seen.append(len(seq))
            if not np.array_equal(seq, np.arange(len(expected))):
                failures.append(f"mix: {len(seq)} rows")
                return

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        compact_log(log, segment_rows=20_000)
    finally:
        stop.set()
        reader.join()
    assert seen and not [f for f in failures if f.startswith("mix")]
    assert _table(log).equals(expected) and len(Log(log).segments) == 3


def test_a_kill_at_any_moment_leaves_the_whole_log(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    source = make_log(tmp_path / "source", ticks=40_000, segment_rows=400)
    expected = _table(source)
    for i in range(6):
        log = tmp_path / f"btc-{i}"
        subprocess.run(["cp", "-r", str(source), str(log)], check=True)
        proc = subprocess.Popen([sys.executable, "-m", "ticktape", "compact", str(log),
                                 "--segment-rows", "5000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 2.0))  # a random moment: before, during or after the swap
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _table(log).equals(expected), f"kill {i}"
        assert verify_log(log).ok
        # Whatever was left behind, compacting again finishes the job.
        compact_log(log, segment_rows=5_000)
        assert _table(log).equals(expected) and len(Log(log).segments) == 8
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".btc-{i}")]
