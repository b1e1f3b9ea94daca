"""The ticktape event log: schema, metadata, writer, reader, verification and recovery.

This module is the only one that knows how a log is laid out on disk.

Layout of a log directory `NAME/`:
  seg-<first_seq:012d>.parquet   sealed segments, never rewritten; one row group each by default
  _journal.arrows                the open segment as an Arrow IPC stream, appended and fsynced
                                 every flush interval; readable up to its last complete batch
  _lock                          flock held by the live recorder
  .tmp-*                         a segment being sealed (written, fsynced, then renamed)
Names starting with "_" or "." are skipped by pyarrow.dataset, pandas and DuckDB globs, so
any Parquet tool reads the sealed segments as one table. A single `NAME.parquet` file with
the same schema and metadata is also a log.

Metadata: every segment (and the journal's schema) carries the key `ticktape`, a JSON object:
  format     int, FORMAT_VERSION
  source     "simulator" | "import:<format>" | "live:<venue>" | "watch:<url>"
  seed       int (simulated logs)
  simulator  {"seed", "rate", "symbols": [{every SymbolParams field}], "block_events"}
  start      ISO 8601 anchor of simulated time
  clock      "sim" | "wall"
  mode       "fast" | "realtime"
Readers refuse a log whose journal was left by a dead recorder (NeedsRecoveryError naming
`ticktape recover`); they never modify a log themselves. While a recorder holds the lock the
log is live: its journal is read as part of the log, which is how a growing log is followed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.errors import (
    LogDamagedError,
    LogExistsError,
    LogLockedError,
    LogNotFoundError,
    NeedsRecoveryError,
    NotALogError,
    TicktapeError,
)

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "SCHEMA",
    "Log",
    "LogInfo",
    "LogWriter",
    "RecoverReport",
    "VerifyReport",
    "find_logs",
    "iso_ns",
    "make_batch",
    "recover_log",
    "verify_log",
]

FORMAT_VERSION = 1
METADATA_KEY = "ticktape"
SIDES = ("buy", "sell", "unknown")
TS_TYPE = pa.timestamp("ns", tz="UTC")
SCHEMA = pa.schema([
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("ts", TS_TYPE, nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("price", pa.float64(), nullable=False),
    pa.field("size", pa.float64(), nullable=False),
    pa.field("side", pa.string(), nullable=False),
])
OPTIONAL_COLUMNS = {"trade_id": pa.string(), "venue": pa.string()}
JOURNAL = "_journal.arrows"
LOCK = "_lock"
TMP_PREFIX = ".tmp-"
_SEGMENT_RE = re.compile(r"^seg-(\d{12})\.parquet$")
DEFAULT_SEGMENT_ROWS = 1_000_000
# Chosen by measurement (docs/log-format.md): ~7 bytes/tick against ~9 with pyarrow defaults.
PARQUET_OPTIONS: dict[str, Any] = dict(
    compression="zstd",
    use_dictionary=["symbol", "price", "size", "side"],
    column_encoding={"seq": "DELTA_BINARY_PACKED", "ts": "DELTA_BINARY_PACKED"},
    write_statistics=["seq", "ts"],
)


def iso_ns(ns: int | None) -> str | None:
    """Integer ns since the epoch -> ISO 8601 UTC with nanoseconds ('...T00:00:00.000000001Z')."""
    if ns is None:
        return None
    seconds, frac = divmod(int(ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def make_batch(seq: np.ndarray, ts_ns: np.ndarray, symbol: pa.Array, price: np.ndarray,
               size: np.ndarray, side: pa.Array) -> pa.RecordBatch:
    """A record batch in the log's schema from columns (symbol/side may be dictionary arrays)."""
    if isinstance(symbol.type, pa.DictionaryType):
        symbol = symbol.cast(pa.string())
    if isinstance(side.type, pa.DictionaryType):
        side = side.cast(pa.string())
    return pa.RecordBatch.from_arrays(
        [pa.array(seq, pa.int64()), pa.array(ts_ns, pa.int64()).cast(TS_TYPE), symbol,
         pa.array(price, pa.float64()), pa.array(size, pa.float64()), side],
        schema=SCHEMA,
    )


def _schema_with(metadata: dict[str, Any]) -> pa.Schema:
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return SCHEMA.with_metadata({METADATA_KEY: text})


def _parse_metadata(raw: dict[bytes, bytes] | None, where: str) -> dict[str, Any]:
    if not raw or METADATA_KEY.encode() not in raw:
        raise NotALogError(f"{where} is Parquet but not a ticktape log (no 'ticktape' metadata)")
    try:
        meta = json.loads(raw[METADATA_KEY.encode()])
    except ValueError as exc:
        raise LogDamagedError(f"{where}: 'ticktape' metadata is not JSON") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), int) \
            or not isinstance(meta.get("source"), str):
        raise LogDamagedError(f"{where}: 'ticktape' metadata lacks an integer 'format' and a 'source'")
    if meta["format"] > FORMAT_VERSION:
        raise NotALogError(f"{where}: log format {meta['format']} is newer than this ticktape "
                           f"({FORMAT_VERSION}); upgrade ticktape")
    return meta


def _check_schema(schema: pa.Schema, where: str) -> None:
    for want in SCHEMA:
        if want.name not in schema.names:
            raise LogDamagedError(f"{where}: column {want.name!r} is missing")
        got = schema.field(want.name).type
        if isinstance(got, pa.DictionaryType):
            got = got.value_type
        if got != want.type and not (want.type == pa.string() and got == pa.large_string()):
            raise LogDamagedError(f"{where}: column {want.name!r} is {got}, expected {want.type}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal_table(directory: Path, table: pa.Table, first_seq: int, row_group_size: int) -> Path:
    """Write a sealed segment atomically: temporary file, fsync, rename, fsync the directory.
    A reader sees the whole segment or none of it; a crash leaves at most a .tmp- file."""
    final = directory / f"seg-{first_seq:012d}.parquet"
    tmp = directory / f"{TMP_PREFIX}{final.name}"
    pq.write_table(table, tmp, row_group_size=max(1, row_group_size), **PARQUET_OPTIONS)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)
    return final


def _lock_is_held(directory: Path) -> bool:
    """True while a live recorder holds the log's flock."""
    lock = directory / LOCK
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _take_lock(directory: Path) -> int:
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LogLockedError(f"{directory} is being written by another live recorder") from exc
    return fd


def read_journal(path: Path) -> tuple[pa.Schema | None, list[pa.RecordBatch], int]:
    """Complete batches of a journal (a torn last batch is dropped) and the bytes they span."""
    batches: list[pa.RecordBatch] = []
    try:
        source = pa.memory_map(str(path))
    except (FileNotFoundError, OSError):
        return None, batches, 0
    with source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            return None, batches, 0
        good = source.tell()
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break  # torn write: everything before it is intact
            batches.append(batch)
            good = source.tell()
        return reader.schema, batches, good


@dataclass(frozen=True)
class Segment:
    path: Path
    first_seq: int
    rows: int
    ts_min: int | None
    ts_max: int | None
    metadata: dict[str, Any]


def _open_segment(path: Path) -> Segment:
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LogDamagedError(
            f"segment {path.name} is unreadable (truncated or corrupt): run `ticktape verify`"
        ) from exc
    info = _parse_metadata(meta.metadata, str(path))
    _check_schema(meta.schema.to_arrow_schema(), str(path))
    seq_min, ts_min, ts_max = _column_range(path, meta)
    return Segment(path, seq_min, meta.num_rows, ts_min, ts_max, info)


def _column_range(path: Path, meta: pq.FileMetaData) -> tuple[int, int | None, int | None]:
    """(first seq, min ts, max ts) from row-group statistics, or by reading if absent."""
    if meta.num_rows == 0:
        return 0, None, None
    names = meta.schema.to_arrow_schema().names
    seq_i, ts_i = names.index("seq"), names.index("ts")
    try:
        seq_stats = [meta.row_group(i).column(seq_i).statistics for i in range(meta.num_row_groups)]
        ts_stats = [meta.row_group(i).column(ts_i).statistics for i in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max for s in seq_stats + ts_stats):
            def as_int(v: Any) -> int:
                return int(v.value) if hasattr(v, "value") else int(pa.scalar(v, TS_TYPE).value)
            return (int(seq_stats[0].min), min(as_int(s.min) for s in ts_stats),
                    max(as_int(s.max) for s in ts_stats))
    except (pa.ArrowException, ValueError, TypeError):
        pass
    table = pq.read_table(path, columns=["seq", "ts"])
    ts = table.column("ts").cast(pa.int64())
    return int(table.column("seq")[0].as_py()), int(pc.min(ts).as_py()), int(pc.max(ts).as_py())


@dataclass(frozen=True)
class LogInfo:
    name: str
    path: str
    events: int
    first_seq: int | None
    last_seq: int | None
    first_ts: int | None
    last_ts: int | None
    symbols: list[str]
    bytes: int
    segments: int
    live: bool
    metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "events": self.events,
            "first_seq": self.first_seq, "last_seq": self.last_seq,
            "first_ts": iso_ns(self.first_ts), "last_ts": iso_ns(self.last_ts),
            "first_ts_ns": self.first_ts, "last_ts_ns": self.last_ts,
            "symbols": self.symbols, "bytes": self.bytes, "segments": self.segments,
            "live": self.live, "ticktape": self.metadata,
        }


class Log:
    """A log opened for reading: sealed segments plus, while a recorder lives, its journal."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.name = self.path.stem if self.path.suffix == ".parquet" else self.path.name
        self._symbols_cache: dict[Path, list[str]] = {}
        # One immutable snapshot, replaced whole by refresh(): readers in other threads see
        # sealed segments and journal from the same instant, never a seal half-applied.
        self._snap: tuple[list[Segment], list[pa.RecordBatch], bool, dict[str, Any]] = (
            [], [], False, {})
        self.refresh()

    @property
    def segments(self) -> list[Segment]:
        return self._snap[0]

    @property
    def journal(self) -> list[pa.RecordBatch]:
        return self._snap[1]

    @property
    def live(self) -> bool:
        return self._snap[2]

    @property
    def metadata(self) -> dict[str, Any]:
        return self._snap[3]

    # -- discovery -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-scan the log: new sealed segments and the journal's complete batches."""
        path = self.path
        if not path.exists():
            raise LogNotFoundError(f"no such log: {path}")
        if path.is_file():
            if path.suffix != ".parquet":
                raise NotALogError(f"{path} is not a log (expected a directory or a .parquet file)")
            seg = _open_segment(path)
            self._check_order([seg])
            self._snap = ([seg], [], False, seg.metadata)
            return
        if not path.is_dir():
            raise NotALogError(f"{path} is not a log")
        names, live = self._list(path)
        known = {s.path.name: s for s in self.segments}
        segments = [known.get(n) or _open_segment(path / n) for n in sorted(names)
                    if n.endswith(".parquet") and not n.startswith(("_", "."))]
        segments.sort(key=lambda s: (s.first_seq, s.rows))
        has_journal = JOURNAL in names
        journal: list[pa.RecordBatch] = []
        metadata = segments[-1].metadata if segments else {}
        if live and has_journal:
            schema, journal, _ = read_journal(path / JOURNAL)
            if schema is not None:
                metadata = metadata or _parse_metadata(schema.metadata, str(path / JOURNAL))
            next_seq = segments[-1].first_seq + segments[-1].rows if segments else 0
            journal = [b.slice(max(0, next_seq - int(b.column(0)[0].as_py()))) for b in journal
                       if b.num_rows and int(b.column(0)[-1].as_py()) >= next_seq]
        if not segments and not live:
            if names and all(n.startswith(("_", ".")) for n in names):
                raise NeedsRecoveryError(f"{path} holds no sealed segment: run `ticktape recover {path}`")
            raise NotALogError(f"{path} is not a log (no Parquet segments)")
        self._check_order(segments)
        self._snap = (segments, journal, live, metadata)

    @staticmethod
    def _list(path: Path) -> tuple[list[str], bool]:
        """The directory's names and whether a recorder holds it. Live means the lock is held,
        for the whole recording (between a seal and the next flush there is no journal)."""
        for _ in range(3):
            try:
                names = os.listdir(path)
            except OSError as exc:
                raise NotALogError(f"{path} cannot be read: {exc.strerror}") from exc
            live = _lock_is_held(path)
            leftovers = JOURNAL in names or any(n.startswith(TMP_PREFIX) for n in names)
            if live or not leftovers:
                return names, live
            # A recorder that closed cleanly between listdir and the lock check looks like a
            # crashed one for an instant: list again before calling it a crash.
            time.sleep(0.01)
        raise NeedsRecoveryError(
            f"{path} was left open by a recorder that stopped: run `ticktape recover {path}`")

    def _check_order(self, segments: list[Segment]) -> None:
        expected = 0
        for seg in segments:
            if seg.rows and seg.first_seq != expected:
                raise LogDamagedError(
                    f"{self.name}: segment {seg.path.name} starts at seq {seg.first_seq}, expected "
                    f"{expected}: run `ticktape verify`")
            expected += seg.rows

    # -- summary ---------------------------------------------------------------------------
    @property
    def events(self) -> int:
        segments, journal, _, _ = self._snap
        return sum(s.rows for s in segments) + sum(b.num_rows for b in journal)

    def _segment_symbols(self, seg: Segment) -> list[str]:
        if seg.path not in self._symbols_cache:
            if seg.rows == 0:
                self._symbols_cache[seg.path] = []
            else:
                col = pq.read_table(seg.path, columns=["symbol"], read_dictionary=["symbol"])
                chunks = col.column(0).unify_dictionaries().chunks
                values: set[str] = set()
                for chunk in chunks:
                    used = np.unique(chunk.indices.to_numpy(zero_copy_only=False))
                    values.update(chunk.dictionary.take(pa.array(used)).to_pylist())
                self._symbols_cache[seg.path] = sorted(values)
        return self._symbols_cache[seg.path]

    def info(self) -> LogInfo:
        segments, journal, live, metadata = self._snap
        symbols: set[str] = set()
        for seg in segments:
            symbols.update(self._segment_symbols(seg))
        for batch in journal:
            symbols.update(pc.unique(batch.column(2)).to_pylist())
        ts_min = [s.ts_min for s in segments if s.ts_min is not None]
        ts_max = [s.ts_max for s in segments if s.ts_max is not None]
        for batch in journal:
            if batch.num_rows:
                ts = batch.column(1).cast(pa.int64())
                ts_min.append(int(ts[0].as_py()))
                ts_max.append(int(ts[-1].as_py()))
        events = sum(s.rows for s in segments) + sum(b.num_rows for b in journal)
        size = 0
        for seg in segments:
            with contextlib.suppress(FileNotFoundError):
                size += seg.path.stat().st_size
        if live:
            with contextlib.suppress(FileNotFoundError):
                size += (self.path / JOURNAL).stat().st_size
        return LogInfo(
            name=self.name, path=str(self.path), events=events,
            first_seq=0 if events else None, last_seq=events - 1 if events else None,
            first_ts=min(ts_min) if ts_min else None, last_ts=max(ts_max) if ts_max else None,
            symbols=sorted(symbols), bytes=size, segments=len(segments), live=live,
            metadata=metadata,
        )

    # -- reading ---------------------------------------------------------------------------
    def seq_at_ts(self, ts_ns: int) -> int:
        """The first seq whose ts >= ts_ns (events when none), by bisecting segments then rows."""
        segments, journal, _, _ = self._snap
        base = 0
        for seg in segments:
            if seg.ts_max is not None and seg.ts_max >= ts_ns:
                ts = pq.read_table(seg.path, columns=["ts"]).column(0).cast(pa.int64()).to_numpy()
                return base + int(np.searchsorted(ts, ts_ns, side="left"))
            base += seg.rows
        for batch in journal:
            ts = batch.column(1).cast(pa.int64()).to_numpy()
            if len(ts) and ts[-1] >= ts_ns:
                return base + int(np.searchsorted(ts, ts_ns, side="left"))
            base += batch.num_rows
        return base

    def iter_batches(self, from_seq: int = 0, batch_rows: int = 65_536,
                     columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The log's events from from_seq on, in seq order, without loading the log whole."""
        names = columns or SCHEMA.names
        segments, journal, _, _ = self._snap
        expected = from_seq
        base = 0
        for seg in segments:
            end = base + seg.rows
            if end > expected:
                yield from self._segment_batches(seg, base, expected, batch_rows, names)
                expected = end
            base = end
        for batch in journal:
            first = int(batch.column(0)[0].as_py())
            if first + batch.num_rows > expected:
                piece = batch.slice(max(0, expected - first))
                yield piece.select(names)
                expected = first + batch.num_rows

    def _segment_batches(self, seg: Segment, base: int, from_seq: int, batch_rows: int,
                         names: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            pf = pq.ParquetFile(seg.path)
            groups: list[int] = []
            start = base
            skip = 0
            for i in range(pf.metadata.num_row_groups):
                rows = pf.metadata.row_group(i).num_rows
                if start + rows > from_seq:
                    if not groups:
                        skip = max(0, from_seq - start)
                    groups.append(i)
                start += rows
            read_names = names if "seq" in names else ["seq", *names]
            expected = from_seq
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups,
                                         columns=read_names):
                if skip:
                    cut = min(skip, batch.num_rows)
                    batch, skip = batch.slice(cut), skip - cut
                    if batch.num_rows == 0:
                        continue
                first = batch.column(0)[0].as_py()
                if first != expected:
                    raise LogDamagedError(f"{self.name}: seq jumps from {expected - 1} to {first} "
                                          f"in {seg.path.name}: run `ticktape verify`")
                expected += batch.num_rows
                yield batch if read_names is names else batch.select(names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LogDamagedError(f"{self.name}: segment {seg.path.name} cannot be read ({exc}): "
                                  "run `ticktape verify`") from exc


def find_logs(path: Path | str) -> list[Log]:
    """PATH if it is a log, else every log directly under it (contract §2, `replay PATH`)."""
    root = Path(path)
    if not root.exists():
        raise LogNotFoundError(f"no such file or directory: {root}")
    if root.is_file():
        return [Log(root)]
    names = os.listdir(root)
    if JOURNAL in names or any(_SEGMENT_RE.match(n) for n in names):
        return [Log(root)]
    logs: list[Log] = []
    for name in sorted(names):
        child = root / name
        if name.startswith((".", "_")) or not (child.is_dir() or child.suffix == ".parquet"):
            continue
        with contextlib.suppress(NotALogError):
            logs.append(Log(child))
    # A directory of foreign-named segments (part-0.parquet, ...) with no logs inside is one log.
    if not logs and any(n.endswith(".parquet") for n in names):
        return [Log(root)]
    return logs


class LogWriter:
    """Appends batches to a new log: journal every flush, seal every segment_rows rows."""

    def __init__(self, path: Path | str, metadata: dict[str, Any], *, overwrite: bool = False,
                 segment_rows: int = DEFAULT_SEGMENT_ROWS) -> None:
        self.path = Path(path)
        if self.path.suffix == ".parquet":
            raise LogExistsError(f"{self.path}: record writes a log directory; drop the .parquet suffix")
        self.schema = _schema_with({"format": FORMAT_VERSION, **metadata})
        self.segment_rows = segment_rows
        self._prepare_directory(overwrite)
        self._lock_fd: int | None = _take_lock(self.path)
        self.next_seq = 0
        self.sealed_rows = 0
        self._open: list[pa.RecordBatch] = []  # the open segment, in memory
        self._open_rows = 0
        self._journaled = 0  # how many of _open are already in the journal
        self._journal_file: BinaryIO | None = None
        self._journal: pa.ipc.RecordBatchStreamWriter | None = None
        self.segments_written = 0
        # Sealing (Parquet encode + fsync) runs on a second core while the caller produces the
        # next segment. At most one seal is in flight, and no new journal is opened until it
        # has finished, so "rename, then remove the journal" keeps its order.
        self._sealer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="seal")
        self._sealing: concurrent.futures.Future[None] | None = None

    def _prepare_directory(self, overwrite: bool) -> None:
        path = self.path
        try:
            if path.exists() and not path.is_dir():
                raise LogExistsError(f"{path} exists and is not a log directory")
            if path.is_dir() and any(path.iterdir()):
                if not overwrite:
                    raise LogExistsError(f"log {path} exists; pass --overwrite to replace it")
                entries = list(path.iterdir())
                ours = all(_SEGMENT_RE.match(e.name) or e.name in (JOURNAL, LOCK)
                           or e.name.startswith(TMP_PREFIX) for e in entries)
                if not ours:
                    raise LogExistsError(f"{path} holds files that are not a ticktape log's; "
                                         "refusing to delete them")
                if _lock_is_held(path):
                    raise LogLockedError(f"{path} is being written by another live recorder")
                for entry in entries:
                    entry.unlink()
            path.mkdir(parents=True, exist_ok=True)
            probe = path / (TMP_PREFIX + "probe")
            probe.write_bytes(b"")
            probe.unlink()
        except PermissionError as exc:
            raise LogExistsError(f"cannot write {path}: permission denied") from exc
        except OSError as exc:
            if isinstance(exc, TicktapeError):
                raise
            raise LogExistsError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def append(self, batch: pa.RecordBatch) -> None:
        """Add events (their seq must continue the log's); seals whenever a segment fills."""
        if batch.num_rows == 0:
            return
        first = int(batch.column(0)[0].as_py())
        if first != self.next_seq:
            raise ValueError(f"batch starts at seq {first}, log continues at {self.next_seq}")
        if batch.schema != SCHEMA:
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=SCHEMA)
        offset = 0
        while offset < batch.num_rows:
            take = min(self.segment_rows - self._open_rows, batch.num_rows - offset)
            self._open.append(batch.slice(offset, take))
            self._open_rows += take
            offset += take
            if self._open_rows >= self.segment_rows:
                self.seal()
        self.next_seq += batch.num_rows

    @property
    def open_rows(self) -> int:
        return self._open_rows

    def _wait_sealed(self) -> None:
        if self._sealing is not None:
            sealing, self._sealing = self._sealing, None
            sealing.result()  # re-raises a failed seal in the caller

    def flush(self) -> None:
        """Make every appended event durable in the journal (fsync)."""
        if self._journaled == len(self._open):
            return
        self._wait_sealed()
        if self._journal is None:
            self._journal_file = open(self.path / JOURNAL, "wb")  # noqa: SIM115 - owned by self
            self._journal = pa.ipc.new_stream(self._journal_file, self.schema)
        for batch in self._open[self._journaled:]:
            self._journal.write_batch(batch)
        self._journaled = len(self._open)
        assert self._journal_file is not None
        self._journal_file.flush()
        os.fsync(self._journal_file.fileno())

    def seal(self, *, allow_empty: bool = False, wait: bool = False) -> None:
        """Write the open segment as Parquet atomically (tmp, fsync, rename), then drop the journal."""
        if not self._open and not allow_empty:
            return
        self._wait_sealed()
        table = (pa.Table.from_batches(self._open, schema=self.schema) if self._open
                 else self.schema.empty_table())
        first_seq = self.sealed_rows
        had_journal = self._journal is not None
        self._close_journal()
        self.sealed_rows += table.num_rows
        self.segments_written += 1
        self._open, self._open_rows, self._journaled = [], 0, 0
        self._sealing = self._sealer.submit(self._write_segment, table, first_seq, had_journal)
        if wait:
            self._wait_sealed()

    def _write_segment(self, table: pa.Table, first_seq: int, had_journal: bool) -> None:
        _seal_table(self.path, table, first_seq, self.segment_rows)
        # Only now may the journal go: until the rename, it is the only durable copy.
        if had_journal:
            with contextlib.suppress(FileNotFoundError):
                (self.path / JOURNAL).unlink()
            _fsync_dir(self.path)

    def _close_journal(self) -> None:
        # Closing the IPC writer would append an end-of-stream marker; the file is all we own.
        # The sealing thread removes the journal once its rows are in a renamed segment.
        self._journal = None
        if self._journal_file is not None:
            self._journal_file.close()
            self._journal_file = None

    def close(self) -> None:
        """Seal what is open (an empty log gets one empty segment) and release the lock."""
        if self._lock_fd is None:
            return
        try:
            self.seal(allow_empty=self.segments_written == 0, wait=True)
        finally:
            self._sealer.shutdown(wait=True)
        with contextlib.suppress(FileNotFoundError):
            (self.path / LOCK).unlink()
        os.close(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- verification and recovery ---------------------------------------------------------------
@dataclass
class VerifyReport:
    name: str
    path: str
    events: int = 0
    segments: int = 0
    needs_recovery: bool = False
    live: bool = False
    regenerated: bool | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "ok": self.ok, "events": self.events,
                "segments": self.segments, "needs_recovery": self.needs_recovery,
                "live": self.live, "regenerated": self.regenerated, "problems": self.problems}


def _check_batch(batch: pa.RecordBatch, where: str, expected_seq: int, last_ts: int | None,
                 report: VerifyReport) -> tuple[int, int | None]:
    seq = batch.column(0).to_numpy()
    if batch.column(0).null_count or seq[0] != expected_seq or (
            len(seq) > 1 and not np.all(np.diff(seq) == 1)):
        bad = expected_seq if seq[0] != expected_seq else int(seq[np.argmax(np.diff(seq) != 1)])
        report.problem(f"{where}: seq is not contiguous near {bad} (expected {expected_seq} "
                       f"first, got {int(seq[0])})")
    ts_col = batch.column(1)
    if ts_col.null_count:
        report.problem(f"{where}: ts has nulls")
    ts = ts_col.cast(pa.int64()).fill_null(0).to_numpy()
    if (last_ts is not None and len(ts) and ts[0] < last_ts) or np.any(np.diff(ts) < 0):
        report.problem(f"{where}: ts decreases (from seq {int(seq[0])})")
    for col in ("price", "size"):
        arr = batch.column(col)
        values = arr.fill_null(math.nan).to_numpy()
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            report.problem(f"{where}: {col} not finite and > 0 at seq {int(seq[np.argmax(bad)])} "
                           f"({values[np.argmax(bad)]})")
    side = batch.column("side")
    if side.null_count or not pc.all(pc.is_in(side, pa.array(SIDES))).as_py():
        report.problem(f"{where}: side holds values other than {', '.join(SIDES)}")
    if batch.column("symbol").null_count:
        report.problem(f"{where}: symbol has nulls")
    return expected_seq + len(seq), int(ts[-1]) if len(ts) else last_ts


def verify_log(path: Path | str, *, regenerate: bool = False) -> VerifyReport:
    """Check everything the format promises; problems are reported, never raised."""
    root = Path(path)
    if not root.exists():
        raise LogNotFoundError(f"no such log: {root}")
    report = VerifyReport(name=root.stem if root.is_file() else root.name, path=str(root))
    files: list[Path]
    if root.is_dir():
        names = sorted(os.listdir(root))
        live = _lock_is_held(root)
        report.live = live
        if not live and (JOURNAL in names or any(n.startswith(TMP_PREFIX) for n in names)):
            report.needs_recovery = True
            report.problem(f"open segment left by a stopped recorder: run `ticktape recover {root}`")
        files = [root / n for n in names if n.endswith(".parquet") and not n.startswith(("_", "."))]
        if not files and not report.needs_recovery and not live:
            raise NotALogError(f"{root} is not a log (no Parquet segments)")
    elif root.suffix == ".parquet":
        files = [root]
    else:
        raise NotALogError(f"{root} is not a log (expected a directory or a .parquet file)")

    segments: list[tuple[int, Path]] = []
    metadata: dict[str, Any] | None = None
    for file in files:
        try:
            meta = pq.read_metadata(file)
        except (pa.ArrowInvalid, OSError) as exc:
            report.problem(f"{file.name}: unreadable Parquet (truncated or corrupt): {exc}")
            continue
        try:
            seg_meta = _parse_metadata(meta.metadata, file.name)
            _check_schema(meta.schema.to_arrow_schema(), file.name)
        except NotALogError:
            if root.is_file() or len(files) == 1:
                raise
            report.problem(f"{file.name}: not a ticktape segment (no 'ticktape' metadata)")
            continue
        except LogDamagedError as exc:
            report.problem(str(exc))
            continue
        if metadata is not None and _strip_volatile(seg_meta) != _strip_volatile(metadata):
            report.problem(f"{file.name}: 'ticktape' metadata differs from the other segments'")
        metadata = metadata or seg_meta
        first = _column_range(file, meta)[0] if meta.num_rows else -1
        segments.append((first, file))
    segments.sort()
    expected, last_ts = 0, None
    for _, file in segments:
        try:
            pf = pq.ParquetFile(file)
            for batch in pf.iter_batches(batch_size=1_000_000, columns=SCHEMA.names):
                expected, last_ts = _check_batch(batch, file.name, expected, last_ts, report)
        except (pa.ArrowInvalid, OSError) as exc:
            report.problem(f"{file.name}: data pages unreadable: {exc}")
    report.events = expected
    report.segments = len(segments)
    if regenerate:
        report.regenerated = _verify_regenerate(root, metadata, report)
    return report


def _strip_volatile(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "segment"}


def _verify_regenerate(root: Path, metadata: dict[str, Any] | None, report: VerifyReport) -> bool:
    """Re-run the simulator from the log's own metadata and compare every event."""
    from recorder.record import regenerate_batches  # the record loop owns the event mapping

    if not metadata or metadata.get("source") != "simulator":
        report.problem("--regenerate needs a simulated log (metadata source 'simulator')")
        return False
    if report.problems:
        return False
    log = Log(root)
    compare_ts = metadata.get("clock", "sim") == "sim"
    fresh = regenerate_batches(metadata, log.events)
    pending: pa.Table | None = None
    seq = 0
    for batch in log.iter_batches(batch_rows=262_144):
        need = batch.num_rows
        parts = [] if pending is None else [pending]
        have = 0 if pending is None else pending.num_rows
        while have < need:
            nxt = next(fresh)
            parts.append(pa.Table.from_batches([nxt]))
            have += nxt.num_rows
        table = pa.concat_tables(parts).combine_chunks()
        want, pending = table.slice(0, need), table.slice(need)
        got = pa.Table.from_batches([batch])
        for col in ("symbol", "price", "size", "side", *(("ts",) if compare_ts else ())):
            if not got.column(col).equals(want.column(col)):
                a = got.column(col).to_numpy(zero_copy_only=False)
                b = want.column(col).to_numpy(zero_copy_only=False)
                first_bad = int(np.argmax(a != b))
                report.problem(f"--regenerate: {col} differs from the simulator at seq "
                               f"{seq + first_bad}")
                return False
        seq += need
    return True


@dataclass
class RecoverReport:
    name: str
    recovered_events: int = 0
    dropped_bytes: int = 0
    removed_files: list[str] = field(default_factory=list)
    sealed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def recover_log(path: Path | str) -> RecoverReport:
    """Seal a killed recorder's journal (up to its last complete batch) and clear leftovers."""
    root = Path(path)
    if not root.exists():
        raise LogNotFoundError(f"no such log: {root}")
    if not root.is_dir():
        raise NotALogError(f"{root}: only log directories can need recovery")
    report = RecoverReport(name=root.name)
    lock_fd = _take_lock(root)
    try:
        for name in sorted(os.listdir(root)):
            if name.startswith(TMP_PREFIX):
                (root / name).unlink()
                report.removed_files.append(name)
        sealed = sorted(n for n in os.listdir(root) if _SEGMENT_RE.match(n))
        next_seq = 0
        for name in sealed:
            seg = _open_segment(root / name)
            if seg.first_seq != next_seq:
                raise LogDamagedError(f"segment {name} starts at seq {seg.first_seq}, expected "
                                      f"{next_seq}; sealed segments are never rewritten")
            next_seq += seg.rows
        journal_path = root / JOURNAL
        if journal_path.exists():
            schema, batches, good = read_journal(journal_path)
            report.dropped_bytes = journal_path.stat().st_size - good
            if schema is not None:
                meta = _parse_metadata(schema.metadata, JOURNAL)
                _check_schema(schema, JOURNAL)
                keep = []
                for batch in batches:
                    first = int(batch.column(0)[0].as_py()) if batch.num_rows else next_seq
                    last = first + batch.num_rows
                    if last <= next_seq:
                        continue  # already sealed before the kill
                    if first > next_seq:
                        raise LogDamagedError(f"journal jumps from seq {next_seq} to {first}")
                    keep.append(batch.slice(next_seq - first))
                    next_seq = last
                if keep or not sealed:
                    table = pa.Table.from_batches(keep, schema=schema) if keep \
                        else schema.empty_table()
                    first_seq = int(keep[0].column(0)[0].as_py()) if keep else 0
                    table = table.replace_schema_metadata(
                        {METADATA_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))})
                    final = _seal_table(root, table, first_seq, DEFAULT_SEGMENT_ROWS)
                    report.sealed = final.name
                    report.recovered_events = table.num_rows
            journal_path.unlink()
            report.removed_files.append(JOURNAL)
            _fsync_dir(root)
    finally:
        with contextlib.suppress(FileNotFoundError):
            (root / LOCK).unlink()
        os.close(lock_fd)
    if not any(_SEGMENT_RE.match(n) for n in os.listdir(root)):
        raise NotALogError(f"{root} holds no events to recover")
    return report
