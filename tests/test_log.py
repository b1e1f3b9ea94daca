from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from recorder.errors import (
    LogDamagedError,
    LogExistsError,
    NeedsRecoveryError,
    NotALogError,
)
from recorder.log import JOURNAL, SCHEMA, Log, LogWriter, make_batch, recover_log, verify_log
from recorder.log.schema import LOCK
from recorder.log.segments import read_journal
from tests.conftest import make_log


def _bytes_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_two_fast_recordings_are_byte_identical(tmp_path: Path) -> None:
    a = make_log(tmp_path / "a", ticks=30_000, segment_rows=10_000, symbols="BTC-USD,ETH-USD")
    b = make_log(tmp_path / "b", ticks=30_000, segment_rows=10_000, symbols="BTC-USD,ETH-USD")
    assert list(_bytes_of(a)) == [f"seg-{i:012d}.parquet" for i in (0, 10_000, 20_000)]
    assert _bytes_of(a) == _bytes_of(b)


def test_any_parquet_tool_reads_the_log_as_one_table(small_log: Path) -> None:
    ours = pa.Table.from_batches(list(Log(small_log).iter_batches()))
    by_dataset = ds.dataset(small_log, format="parquet").to_table()
    by_pandas = pd.read_parquet(small_log)
    by_duckdb = duckdb.sql(
        f"SELECT * FROM read_parquet('{small_log}/*.parquet') ORDER BY seq").arrow()
    if hasattr(by_duckdb, "read_all"):  # newer DuckDB returns a RecordBatchReader
        by_duckdb = by_duckdb.read_all()
    assert ours.num_rows == 5_000
    assert ours.schema.remove_metadata() == SCHEMA
    assert by_dataset.sort_by("seq").equals(ours)
    assert by_pandas["seq"].tolist() == list(range(5_000))
    assert np.array_equal(by_pandas["price"].to_numpy(), ours.column("price").to_numpy())
    assert str(by_pandas["ts"].dtype) == "datetime64[ns, UTC]"
    assert by_duckdb.column("seq").to_pylist() == list(range(5_000))
    assert by_duckdb.column("side").to_pylist() == ours.column("side").to_pylist()
    meta = json.loads(pq.read_metadata(next(small_log.glob("*.parquet"))).metadata[b"ticktape"])
    assert meta["format"] == 1 and meta["source"] == "simulator" and meta["seed"] == 7
    assert meta["simulator"]["symbols"][0]["symbol"] == "BTC-USD"


def test_info_reports_the_contract_fields(small_log: Path) -> None:
    info = Log(small_log).info().to_json()
    table = pd.read_parquet(small_log)
    assert info["events"] == 5_000 and info["first_seq"] == 0 and info["last_seq"] == 4_999
    assert info["first_ts"] == table["ts"].iloc[0].strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    assert info["symbols"] == ["BTC-USD"] and info["segments"] == 3
    assert info["bytes"] == sum(p.stat().st_size for p in small_log.glob("*.parquet"))
    assert info["ticktape"]["seed"] == 7


def test_iter_batches_from_any_seq(small_log: Path) -> None:
    log = Log(small_log)
    for start in (0, 1, 1_999, 2_000, 4_999, 5_000):
        seqs = np.concatenate([b.column(0).to_numpy() for b in log.iter_batches(start, 777)]
                              or [np.empty(0, np.int64)])
        assert seqs.tolist() == list(range(start, 5_000))
    assert log.seq_at_ts(0) == 0
    ts = pd.read_parquet(small_log)["ts"].astype("int64").to_numpy()
    assert log.seq_at_ts(int(ts[3_333])) == int(np.searchsorted(ts, ts[3_333]))
    assert log.seq_at_ts(int(ts[-1]) + 1) == 5_000


def test_existing_log_is_never_overwritten_without_flag(small_log: Path) -> None:
    before = _bytes_of(small_log)
    with pytest.raises(LogExistsError, match="--overwrite"):
        LogWriter(small_log, {"source": "test"})
    assert _bytes_of(small_log) == before
    (small_log.parent / "notes").mkdir()
    (small_log.parent / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(LogExistsError, match="not a ticktape log"):
        LogWriter(small_log.parent / "notes", {"source": "test"}, overwrite=True)
    assert (small_log.parent / "notes" / "todo.txt").read_text() == "mine"


def test_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LogExistsError, match=r"cannot write|not a log directory"):
        LogWriter(blocker / "log", {"source": "test"})


def test_foreign_parquet_and_stray_paths_are_not_logs(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), foreign)
    with pytest.raises(NotALogError, match="not a ticktape log"):
        Log(foreign)
    with pytest.raises(NotALogError, match="not a ticktape log"):
        verify_log(foreign)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotALogError, match="holds seg-"):
        Log(tmp_path / "empty")
    (tmp_path / "text.txt").write_text("hello")
    with pytest.raises(NotALogError):
        Log(tmp_path / "text.txt")


def test_single_parquet_file_is_a_log(small_log: Path, tmp_path: Path) -> None:
    table = pq.read_table(small_log)
    single = tmp_path / "one.parquet"
    pq.write_table(table.replace_schema_metadata(
        pq.read_metadata(next(small_log.glob("*.parquet"))).metadata), single)
    log = Log(single)
    assert log.name == "one" and log.events == 5_000
    assert verify_log(single).ok


def test_truncated_segment_is_reported_and_left_alone(small_log: Path) -> None:
    seg = sorted(small_log.glob("*.parquet"))[1]
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogDamagedError, match="ticktape verify"):
        Log(small_log)
    report = verify_log(small_log)
    assert not report.ok and "truncated or corrupt" in report.problems[0]
    with pytest.raises(LogDamagedError, match=r"never rewritten|unreadable"):
        recover_log(small_log)
    assert seg.read_bytes() == data[: len(data) // 2]


def test_verify_finds_broken_rules(tmp_path: Path) -> None:
    good = make_log(tmp_path / "good", ticks=100)
    meta = pq.read_metadata(next(good.glob("*.parquet"))).metadata
    table = pq.read_table(good)
    cases = {
        "seq is not contiguous": table.set_column(0, "seq", pa.array(
            [0, 1, 3, *range(4, 101)], pa.int64())),
        "ts decreases": table.set_column(1, "ts", pa.array(
            table.column("ts").to_pylist()[::-1], table.schema.field("ts").type)),
        "price not finite": table.set_column(3, "price", pa.array(
            [float("nan"), *table.column("price").to_pylist()[1:]])),
        "size not finite": table.set_column(4, "size", pa.array(
            [-1.0, *table.column("size").to_pylist()[1:]])),
        "side holds values": table.set_column(5, "side", pa.array(
            ["long", *table.column("side").to_pylist()[1:]])),
    }
    for expected, broken in cases.items():
        path = tmp_path / f"{expected[:8].replace(' ', '_')}.parquet"
        pq.write_table(broken.replace_schema_metadata(meta), path)
        report = verify_log(path)
        assert not report.ok, expected
        assert any(expected in p for p in report.problems), (expected, report.problems)
    missing = tmp_path / "missing.parquet"
    pq.write_table(table.drop_columns(["size"]).replace_schema_metadata(meta), missing)
    assert "column 'size' is missing" in verify_log(missing).problems[0]


def _kill_writer_midway(path: Path, rows_flushed: int, tail_garbage: bytes = b"") -> None:
    """Leave a log as a SIGKILLed recorder would: journal with complete batches, lock file."""
    src = make_log(path.parent / f"src-{path.name}", ticks=rows_flushed + 500)
    table = pq.read_table(src)
    writer = LogWriter(path, json.loads(
        pq.read_metadata(next(src.glob("*.parquet"))).metadata[b"ticktape"]),
        segment_rows=rows_flushed // 2 + 1)
    for batch in table.slice(0, rows_flushed).to_batches(max_chunksize=97):
        writer.append(batch)
        writer.flush()
    # Abandon the writer without closing: what SIGKILL does. Release the flock as the kernel would.
    os.close(writer._lock_fd)  # type: ignore[arg-type]
    writer._journal = None
    writer._journal_file.close()  # type: ignore[union-attr]
    if tail_garbage:
        with open(path / JOURNAL, "ab") as fh:
            fh.write(tail_garbage)


def test_killed_log_needs_recovery_then_recovers_exactly(tmp_path: Path) -> None:
    path = tmp_path / "killed"
    _kill_writer_midway(path, 1_000, tail_garbage=b"\xff\xff\xff\xff\x10\x00\x00")
    assert (path / JOURNAL).exists() and (path / LOCK).exists()
    with pytest.raises(NeedsRecoveryError, match="ticktape recover"):
        Log(path)
    report = verify_log(path)
    assert report.needs_recovery and not report.ok
    rec = recover_log(path)
    assert rec.recovered_events == 1_000 - 501 and rec.dropped_bytes == 7
    assert sorted(p.name for p in path.iterdir()) == ["seg-000000000000.parquet",
                                                      "seg-000000000501.parquet"]
    assert verify_log(path).ok
    got = pq.read_table(path)
    src = pq.read_table(tmp_path / "src-killed").slice(0, 1_000)
    assert got.column("seq").to_pylist() == list(range(1_000))
    assert got.column("price").equals(src.column("price"))


def test_recover_after_kill_between_rename_and_journal_removal(tmp_path: Path) -> None:
    """The sealed segment and the journal both hold the same rows: each must appear once."""
    path = tmp_path / "twice"
    _kill_writer_midway(path, 400)
    sealed = sorted(path.glob("seg-*.parquet"))
    journal_rows = 400 - 201
    # Simulate the crash window: seal the journal's rows by hand but leave the journal.
    table = pa.Table.from_batches(read_journal(path / JOURNAL)[1])
    assert table.num_rows == journal_rows and len(sealed) == 1
    pq.write_table(table, path / "seg-000000000201.parquet")
    recover_log(path)
    assert verify_log(path).ok
    assert pq.read_table(path).column("seq").to_pylist() == list(range(400))


def test_empty_log_is_a_log_with_no_events(tmp_path: Path) -> None:
    with LogWriter(tmp_path / "empty", {"source": "test"}):
        pass
    info = Log(tmp_path / "empty").info()
    assert info.events == 0 and info.first_seq is None and info.first_ts is None
    assert verify_log(tmp_path / "empty").ok


def test_live_between_a_seal_and_the_next_flush(tmp_path: Path) -> None:
    """No journal exists right after a seal, yet the recorder still holds the log: live."""
    src = pq.read_table(make_log(tmp_path / "src", ticks=300))
    writer = LogWriter(tmp_path / "rec", {"source": "test"}, segment_rows=100)
    try:
        writer.append(src.to_batches()[0].slice(0, 150))
        writer.seal(wait=True)
        assert not (tmp_path / "rec" / JOURNAL).exists()
        log = Log(tmp_path / "rec")
        assert log.live and log.events == 150
        writer.append(src.to_batches()[0].slice(150, 30))
        writer.flush()
        log.refresh()
        assert log.live and log.events == 180
    finally:
        writer.close()
    log.refresh()
    assert not log.live and log.events == 180


def test_optional_columns_round_trip_through_writer_reader_and_compact(tmp_path: Path) -> None:
    from recorder.log import compact_log
    from recorder.log.schema import TS_TYPE

    n = 2_500
    seq = np.arange(n, dtype=np.int64)
    ts = 1_700_000_000_000_000_000 + seq * 1_000_000
    base = make_batch(seq, ts, pa.array(["BTC-USDT"] * n), np.full(n, 95_000.0), np.ones(n),
                      pa.array(["sell"] * n))
    extra = [pa.array([str(10_000 + i) for i in range(n)]),
             pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), pa.array(["binance"])),
             pa.array(ts + 5_000_000, pa.int64()).cast(TS_TYPE)]
    batch = pa.RecordBatch.from_arrays([*base.columns, *extra],
                                       names=[*SCHEMA.names, "trade_id", "venue", "recv_ts"])
    path = tmp_path / "real"
    with LogWriter(path, {"source": "import:test"}, segment_rows=1_000,
                   optional_columns=("trade_id", "venue", "recv_ts")) as writer:
        writer.append(batch)
    log = Log(path)
    assert log.columns == [*SCHEMA.names, "trade_id", "venue", "recv_ts"]
    assert [b.num_columns for b in log.iter_batches()] == [6, 6, 6]  # required by default
    table = pa.Table.from_batches(log.iter_batches(columns=log.columns))
    assert table.column("trade_id").to_pylist() == [str(10_000 + i) for i in range(n)]
    assert table.column("venue").to_pylist() == ["binance"] * n
    assert table.column("recv_ts").cast(pa.int64()).to_pylist() == (ts + 5_000_000).tolist()
    assert verify_log(path).ok
    compact_log(path, segment_rows=10_000)
    after = Log(path)
    assert len(after.segments) == 1 and after.columns == log.columns
    assert pa.Table.from_batches(after.iter_batches(columns=after.columns)).equals(table)
    with pytest.raises(ValueError, match="differ"), LogWriter(tmp_path / "plain", {"source": "t"}) as w:
        w.append(batch)  # a log without those columns refuses them rather than dropping them


def test_segment_notes_go_into_that_segment_only(tmp_path: Path) -> None:
    n = 10
    seq = np.arange(2 * n, dtype=np.int64)
    batch = make_batch(seq, 1_700_000_000_000_000_000 + seq, pa.array(["X"] * 2 * n),
                       np.ones(2 * n), np.ones(2 * n), pa.array(["buy"] * 2 * n))
    with LogWriter(tmp_path / "log", {"source": "live:test"}, segment_rows=n) as writer:
        writer.segment_notes = {"gaps": [{"symbol": "X", "from_id": 5, "to_id": 9}]}
        writer.append(batch)
    first, second = Log(tmp_path / "log").segments
    assert first.metadata["segment"] == {"gaps": [{"symbol": "X", "from_id": 5, "to_id": 9}]}
    assert "segment" not in second.metadata and first.metadata["source"] == "live:test"
    assert verify_log(tmp_path / "log").ok  # "segment" may differ between segments
