"""Follow mode: the cost of one poll of a live log, by journal size and number of followers,
beside the former approach (every follower re-parses the whole journal every poll)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.common import header
from recorder.log import Log, LogWriter, make_batch
from recorder.log.segments import read_journal

POLLS = 40
APPEND_ROWS = 20  # what a live log gains between two polls (50 ms at 400 events/s)
FLUSH_ROWS = 1_000  # rows per journal batch while filling (one flush a second at 1 kHz)


def _batch(first: int, n: int) -> pa.RecordBatch:
    seq = np.arange(first, first + n, dtype=np.int64)
    return make_batch(seq, 1_700_000_000_000_000_000 + seq * 1_000_000,
                      pa.array(["BTC-USD"] * n), 60_000.0 + (seq % 100) * 0.5, np.ones(n) * 0.01,
                      pa.array(["buy", "sell"] * (n // 2) + ["buy"] * (n % 2)))


def _live_log(root: Path, journal_rows: int) -> tuple[LogWriter, int]:
    writer = LogWriter(root / "live", {"source": "bench"}, segment_rows=10 * journal_rows + 1_000)
    for first in range(0, journal_rows, FLUSH_ROWS):
        writer.append(_batch(first, min(FLUSH_ROWS, journal_rows - first)))
        writer.flush()
    return writer, journal_rows


def _poll_ticktape(log: Log, positions: list[int], max_age: float) -> None:
    """One poll as a server's followers do it: a shared refresh, then each reads its tail."""
    for i, start in enumerate(positions):
        log.refresh(max_age=max_age)
        for batch in log.iter_batches(start):
            positions[i] = int(batch.column(0)[-1].as_py()) + 1


def _poll_reparse(path: Path, positions: list[int]) -> None:
    """The former follow: each follower re-read the whole journal, then took its tail."""
    for i, start in enumerate(positions):
        _, batches, _ = read_journal(path / "_journal.arrows")
        for batch in batches:
            last = int(batch.column(0)[-1].as_py())
            if last >= start:
                positions[i] = last + 1


def _measure(journal_rows: int, followers: int) -> tuple[float, float]:
    """Median seconds per poll: ticktape's follow, then the former re-parse (same log)."""
    root = Path(tempfile.mkdtemp(prefix="ticktape-follow-"))
    try:
        writer, next_seq = _live_log(root, journal_rows)
        log = Log(root / "live")
        ours: list[float] = []
        positions = [next_seq] * followers
        for _ in range(POLLS):
            writer.append(_batch(next_seq, APPEND_ROWS))
            writer.flush()
            next_seq += APPEND_ROWS
            log._refreshed_at = -float("inf")  # polls are 50 ms apart: each refreshes afresh
            began = time.perf_counter()
            _poll_ticktape(log, positions, max_age=0.025)
            ours.append(time.perf_counter() - began)
        assert positions == [next_seq] * followers
        theirs: list[float] = []
        positions = [next_seq] * followers
        # The baseline costs seconds per poll at 1M rows and 50 followers: fewer samples.
        for _ in range(POLLS if journal_rows * followers <= 1_000_000 else 3):
            writer.append(_batch(next_seq, APPEND_ROWS))
            writer.flush()
            next_seq += APPEND_ROWS
            began = time.perf_counter()
            _poll_reparse(root / "live", positions)
            theirs.append(time.perf_counter() - began)
        assert positions == [next_seq] * followers
        writer.close()
        return float(np.median(ours)), float(np.median(theirs))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool = False) -> None:
    report = header("Follow mode — cost of one poll of a live log (all followers together)")
    sizes = [1_000, 100_000] if quick else [1_000, 1_000_000]
    results: dict[tuple[int, int], float] = {}
    for rows in sizes:
        for followers in (1, 50):
            ours, theirs = _measure(rows, followers)
            results[rows, followers] = ours
            report.add(f"poll, {rows:,}-row journal, {followers} follower(s)", ours * 1e6, "us",
                       baseline=theirs * 1e6, baseline_name="each follower re-parses the journal",
                       higher_is_better=False)
    small, large = sizes
    for followers in (1, 50):
        report.add(f"growth {small:,} -> {large:,} rows, {followers} follower(s)",
                   results[large, followers] / results[small, followers], "x",
                   target="flat (~1x)")
    report.add("growth 1 -> 50 followers per follower, largest journal",
               results[large, 50] / 50 / results[large, 1], "x", target="<= 1x")
    report.save()


if __name__ == "__main__":
    run()
