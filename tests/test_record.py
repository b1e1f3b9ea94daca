"""The recorder as a real process: real-time pacing, SIGKILL at random moments, clean signals."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.log import JOURNAL, Log, verify_log
from tests.conftest import run_cli

COMPARED = ["symbol", "price", "size", "side"]


def _start_realtime(path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ticktape", "record", str(path), "--realtime", "--seed", "5",
         "--symbols", "BTC-USD,ETH-USD", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def _visible(path: Path) -> int:
    """Events a reader sees in a log being recorded (0 before its journal exists)."""
    return Log(path).events if (path / JOURNAL).exists() else 0


def _fast_reference(tmp_path: Path, ticks: int) -> pa.Table:
    ref = tmp_path / "reference"
    result = run_cli("record", str(ref), "--seed", "5", "--symbols", "BTC-USD,ETH-USD",
                     "--ticks", str(ticks), "--rate", "2000", "--overwrite")
    assert result.returncode == 0, result.stderr
    return pq.read_table(ref)


def test_sigkill_at_random_moments_then_recover(tmp_path: Path) -> None:
    flush = 0.2
    rng = random.Random(20261125)
    moments = [rng.uniform(0.4, 2.5) for _ in range(3)]
    for i, moment in enumerate(moments):
        path = tmp_path / f"killed-{i}"
        proc = _start_realtime(path, "--rate", "2000", "--flush-interval", str(flush))
        _wait_for(lambda p=path: _visible(p) > 0)
        time.sleep(moment)
        seen = _visible(path)  # flushed before the kill: a reader could already see them
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stderr.close()  # type: ignore[union-attr]

        before = verify_log(path)
        assert before.needs_recovery, f"kill {i} at {moment:.2f}s left nothing to recover"
        rec = run_cli("recover", str(path))
        assert rec.returncode == 0, rec.stderr
        ver = run_cli("verify", str(path), "--json")
        assert ver.returncode == 0, ver.stdout

        got = pq.read_table(path)
        seqs = got.column("seq").to_pylist()
        assert seqs == list(range(len(seqs)))  # each event exactly once, in order
        # Every event that was durable before the kill survives it. (Not "every event up to
        # one flush interval before the kill": on a loaded machine the recorder may run late.)
        assert len(seqs) >= seen, (moment, len(seqs), seen)
        ref = _fast_reference(tmp_path, len(seqs) + 2_000)
        for col in COMPARED:  # and they are the very events a fast recording makes
            assert got.column(col).equals(ref.column(col).slice(0, len(seqs))), col


def test_sigterm_and_sigint_close_the_log_cleanly(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        path = tmp_path / f"stopped-{sig.name}"
        proc = _start_realtime(path, "--rate", "500", "--flush-interval", "0.1")
        _wait_for(lambda p=path: _visible(p) > 0)  # recording, not still starting up
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert not (path / JOURNAL).exists()
        assert sorted(p.name for p in path.iterdir()) == ["seg-000000000000.parquet"]
        assert verify_log(path).ok and Log(path).events > 0


def test_a_growing_log_can_be_read_while_recorded(tmp_path: Path) -> None:
    path = tmp_path / "live"
    proc = _start_realtime(path, "--rate", "1000", "--flush-interval", "0.1")
    try:
        _wait_for(lambda: (path / JOURNAL).exists())
        counts = [0]
        for _ in range(3):
            _wait_for(lambda: _visible(path) > counts[-1])  # the next flush, however late
            log = Log(path)
            assert log.live
            seqs = [s for b in log.iter_batches() for s in b.column(0).to_pylist()]
            assert seqs == list(range(len(seqs)))
            counts.append(len(seqs))
        assert counts[1] < counts[2] < counts[3]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert verify_log(path).ok


def test_realtime_records_the_same_events_as_fast(tmp_path: Path) -> None:
    fast = tmp_path / "fast"
    live = tmp_path / "live"
    common = ["--seed", "9", "--symbols", "BTC-USD,ETH-USD", "--ticks", "400", "--rate", "1000"]
    assert run_cli("record", str(fast), *common).returncode == 0
    began = time.monotonic()
    result = run_cli("record", str(live), *common, "--realtime", "--start",
                     "2024-01-01T00:00:00Z")
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    a, b = pq.read_table(fast), pq.read_table(live)
    for col in [*COMPARED, "ts", "seq"]:
        assert a.column(col).equals(b.column(col)), col
    # 400 events at 1000/s: paced, so it took at least most of 0.4 s of wall time.
    span_s = (b.column("ts").cast(pa.int64())[-1].as_py() - 1704067200 * 10**9) / 1e9
    assert elapsed >= span_s * 0.9


@pytest.mark.parametrize("clock", ["wall"])
def test_wall_clock_timestamps(tmp_path: Path, clock: str) -> None:
    path = tmp_path / "wall"
    before = time.time_ns()
    result = run_cli("record", str(path), "--realtime", "--clock", clock, "--ticks", "100",
                     "--rate", "500")
    after = time.time_ns()
    assert result.returncode == 0, result.stderr
    ts = pq.read_table(path).column("ts").cast(pa.int64()).to_numpy()
    assert before <= ts[0] <= ts[-1] <= after
    assert Log(path).metadata["clock"] == "wall"


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    result = run_cli("record", str(tmp_path / "quiet"), "--ticks", "2000000")
    assert result.returncode == 0
    assert result.stderr == ""  # stderr is a pipe here: no bar, no carriage returns
