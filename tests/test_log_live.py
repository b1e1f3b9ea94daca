"""A log while it is recorded: sealed every --seal-interval for plain Parquet readers, and
followed incrementally (a poll parses only what the journal gained)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recorder.log import JOURNAL, Log, LogWriter, make_batch, verify_log
from recorder.log.files import lock_is_held
from recorder.log.segments import JournalTail


def _batch(first: int, n: int) -> pa.RecordBatch:
    seq = np.arange(first, first + n, dtype=np.int64)
    return make_batch(seq, 1_700_000_000_000_000_000 + seq * 1_000, pa.array(["BTC-USD"] * n),
                      100.0 + seq * 0.01, np.ones(n), pa.array(["buy"] * n))


def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _plain_rows(path: Path) -> pd.DataFrame:
    """What pandas (pyarrow engine) sees of a log directory: its sealed segments only."""
    if not any(path.glob("seg-*.parquet")):
        return pd.DataFrame({"seq": []})
    return pd.read_parquet(path, columns=["seq"])


def test_a_recording_is_visible_to_plain_readers_every_seal_interval(tmp_path: Path) -> None:
    path = tmp_path / "live"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticktape", "record", str(path), "--realtime", "--rate", "500",
         "--seal-interval", "0.5", "--flush-interval", "0.1", "--duration", "120"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_plain_rows(path)) > 0, "the first sealed segment")
        first = _plain_rows(path)
        assert proc.poll() is None and lock_is_held(path)  # still recording: seen while live
        _wait_for(lambda: len(_plain_rows(path)) > len(first), "a second seal")
        seen = _plain_rows(path).sort_values("seq")["seq"].to_numpy()
        assert proc.poll() is None
        # A prefix of the log, gap-free: what a reader sees is never a mix or a hole.
        np.testing.assert_array_equal(seen, np.arange(len(seen)))
        [(count, top)] = duckdb.sql(
            f"SELECT count(*), max(seq) FROM '{path}/seg-*.parquet'").fetchall()
        assert count >= len(seen) and top == count - 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert verify_log(path).ok
    assert len(list(path.glob("seg-*.parquet"))) >= 2


def test_seal_interval_seals_at_the_first_flush_after_it(tmp_path: Path) -> None:
    with LogWriter(tmp_path / "log", {"source": "test"}, seal_interval=0.2) as writer:
        writer.append(_batch(0, 10))
        writer.flush()
        assert not list((tmp_path / "log").glob("seg-*.parquet"))  # journaled, not sealed
        assert (tmp_path / "log" / JOURNAL).exists()
        writer.append(_batch(10, 5))
        time.sleep(0.25)  # the interval itself is what is tested: the segment is old enough now
        writer.flush()
        segments = sorted((tmp_path / "log").glob("seg-*.parquet"))
        assert [s.name for s in segments] == ["seg-000000000000.parquet"]
        assert pd.read_parquet(segments[0])["seq"].tolist() == list(range(15))
        writer.append(_batch(15, 3))
    log = Log(tmp_path / "log")
    assert log.events == 18 and len(log.segments) == 2


def test_fast_recordings_ignore_time_for_segment_boundaries(tmp_path: Path) -> None:
    # No seal interval: segment boundaries come from --segment-rows only (byte-identical logs).
    with LogWriter(tmp_path / "log", {"source": "test"}, segment_rows=7) as writer:
        for first in range(0, 20, 4):
            writer.append(_batch(first, 4))
            writer.flush()
    assert [s.rows for s in Log(tmp_path / "log").segments] == [7, 7, 6]


def test_journal_tail_parses_only_new_bytes_and_waits_out_torn_writes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    writer = LogWriter(path, {"source": "test"})
    try:
        writer.append(_batch(0, 100))
        writer.flush()
        tail = JournalTail(path / JOURNAL)
        schema, batches = tail.read()
        assert schema is not None and sum(b.num_rows for b in batches) == 100
        consumed = tail.good_bytes
        assert consumed == (path / JOURNAL).stat().st_size
        assert tail.read()[1] is batches  # nothing new: no parsing, the same snapshot
        writer.append(_batch(100, 50))
        writer.flush()
        full = (path / JOURNAL).read_bytes()
        # A torn write: only part of the new batch is on disk yet.
        torn = tmp_path / "torn.arrows"
        torn.write_bytes(full[: consumed + (len(full) - consumed) // 2])
        tail_torn = JournalTail(torn)
        assert sum(b.num_rows for b in tail_torn.read()[1]) == 100
        assert tail_torn.good_bytes == consumed
        with open(torn, "ab") as fh:  # the rest of the write lands (same file, same inode)
            fh.write(full[len(torn.read_bytes()):])
        assert [b.num_rows for b in tail_torn.read()[1]] == [100, 50]
        assert [b.num_rows for b in tail.read()[1]] == [100, 50]
        assert tail.good_bytes == len(full)
    finally:
        writer.close()
    assert tail.read() == (None, ())  # sealed: the journal is gone


def test_refresh_is_shared_by_followers_within_max_age(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with LogWriter(path, {"source": "test"}) as writer:
        writer.append(_batch(0, 10))
        writer.flush()
        log = Log(path)
        assert log.live and log.events == 10
        writer.append(_batch(10, 10))
        writer.flush()
        log.refresh(max_age=3600)  # refreshed a moment ago (in the constructor): kept
        assert log.events == 10
        log.refresh()
        assert log.events == 20
        assert [b.num_rows for b in log.iter_batches(15)] == [5]


@pytest.mark.parametrize("rows", [1_000, 200_000])
def test_a_follower_reads_the_journal_tail_by_seq(tmp_path: Path, rows: int) -> None:
    path = tmp_path / "log"
    with LogWriter(path, {"source": "test"}, segment_rows=10 * rows) as writer:
        for first in range(0, rows, rows // 100):
            writer.append(_batch(first, rows // 100))
            writer.flush()
        log = Log(path)
        tail = list(log.iter_batches(rows - 3))
        assert [int(x) for b in tail for x in b.column(0).to_numpy()] == [rows - 3, rows - 2, rows - 1]
