"""Reading a log: sealed segments plus, while a recorder lives, its journal."""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.errors import LogDamagedError, LogNotFoundError, NeedsRecoveryError, NotALogError
from recorder.log.files import lock_is_held
from recorder.log.schema import (
    JOURNAL,
    SCHEMA,
    TMP_PREFIX,
    is_log_dir_listing,
    iso_ns,
    parse_metadata,
)
from recorder.log.segments import JournalTail, Segment, open_segment

__all__ = ["Log", "LogInfo"]

@dataclass(frozen=True)
class _Snapshot:
    segments: tuple[Segment, ...] = ()
    journal: tuple[pa.RecordBatch, ...] = ()
    journal_starts: tuple[int, ...] = ()  # first seq of each journal batch
    live: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    events: int = 0
    columns: list[str] = field(default_factory=lambda: list(SCHEMA.names))


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
    # Trade-id gaps a live recorder noted in sealed segments' "segment" metadata (docs/feeds.md).
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "events": self.events,
            "first_seq": self.first_seq, "last_seq": self.last_seq,
            "first_ts": iso_ns(self.first_ts), "last_ts": iso_ns(self.last_ts),
            "first_ts_ns": self.first_ts, "last_ts_ns": self.last_ts,
            "symbols": self.symbols, "bytes": self.bytes, "segments": self.segments,
            "live": self.live, "ticktape": self.metadata, "gaps": self.gaps,
        }


class Log:
    """A log opened for reading: sealed segments plus, while a recorder lives, its journal."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.name = self.path.stem if self.path.suffix == ".parquet" else self.path.name
        self._symbols_cache: dict[Path, list[str]] = {}
        # One immutable snapshot, replaced whole by refresh(): readers in other threads see
        # sealed segments and journal from the same instant, never a seal half-applied.
        self._snap = _Snapshot()
        # Many followers share one Log (the server's catalog): refreshes are serialized and
        # the journal is parsed incrementally, so a poll costs the same whatever the
        # journal's size, and at most one refresh per max_age runs however many poll.
        self._refresh_lock = threading.Lock()
        self._refreshed_at = -float("inf")
        self._journal_tail = JournalTail(self.path / JOURNAL)
        self._dir_identity: int | None = None
        self.refresh()

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._snap.segments

    @property
    def journal(self) -> tuple[pa.RecordBatch, ...]:
        return self._snap.journal

    @property
    def columns(self) -> list[str]:
        """The log's columns: the required ones, then the optional ones it carries."""
        return self._snap.columns

    @property
    def live(self) -> bool:
        return self._snap.live

    @property
    def metadata(self) -> dict[str, Any]:
        return self._snap.metadata

    # -- discovery -------------------------------------------------------------------------
    def refresh(self, max_age: float = 0.0) -> None:
        """Re-scan the log: new sealed segments and the journal's new complete batches.
        With max_age > 0, a snapshot taken less than max_age seconds ago is kept as is."""
        with self._refresh_lock:
            if max_age > 0 and time.monotonic() - self._refreshed_at < max_age:
                return
            self._refresh()
            self._refreshed_at = time.monotonic()

    def _refresh(self) -> None:
        path = self.path
        if not path.exists():
            raise LogNotFoundError(f"no such log: {path}")
        if path.is_file():
            if path.suffix != ".parquet":
                raise NotALogError(f"{path} is not a log (expected a directory or a .parquet file)")
            seg = open_segment(path)
            self._check_order([seg])
            self._snap = _Snapshot((seg,), metadata=seg.metadata, events=seg.rows,
                                   columns=seg.columns)
            return
        if not path.is_dir():
            raise NotALogError(f"{path} is not a log")
        names, live = self._list(path)
        if not live and not is_log_dir_listing(names):
            if names and all(n.startswith(("_", ".")) for n in names):
                raise NeedsRecoveryError(f"{path} holds no sealed segment: run `ticktape recover {path}`")
            raise NotALogError(f"{path} is not a log (a log directory holds seg-*.parquet "
                               "segments or a journal)")
        # `ticktape compact` swaps the whole directory: cached segments of the old one are
        # stale then, although their names may repeat.
        identity = os.stat(path).st_ino
        if identity != self._dir_identity:
            self._symbols_cache = {}
        known = {s.path.name: s for s in self.segments} if identity == self._dir_identity else {}
        self._dir_identity = identity
        segments = [known.get(n) or open_segment(path / n) for n in sorted(names)
                    if n.endswith(".parquet") and not n.startswith(("_", "."))]
        segments.sort(key=lambda s: (s.first_seq, s.rows))
        has_journal = JOURNAL in names
        journal: tuple[pa.RecordBatch, ...] = ()
        starts: tuple[int, ...] = ()
        next_seq = segments[-1].first_seq + segments[-1].rows if segments else 0
        metadata = segments[-1].metadata if segments else {}
        journal_schema: pa.Schema | None = None
        if live and has_journal:
            journal_schema, batches = self._journal_tail.read()
            if journal_schema is not None:
                metadata = metadata or parse_metadata(journal_schema.metadata, JOURNAL)
            # Batches already sealed (a seal racing this refresh) are skipped by bisection,
            # not by a scan: a poll must not cost more as the journal grows.
            first = max(0, bisect.bisect_right(self._journal_tail.starts, next_seq) - 1)
            journal, starts = batches[first:], self._journal_tail.starts[first:]
            if journal and starts[0] < next_seq:
                cut = next_seq - starts[0]
                if cut >= journal[0].num_rows:
                    journal, starts = journal[1:], starts[1:]
                else:
                    journal = (journal[0].slice(cut), *journal[1:])
                    starts = (next_seq, *starts[1:])
        if not segments and not live:
            raise NotALogError(f"{path} is not a log (no Parquet segments)")
        self._check_order(segments)
        journal_rows = starts[-1] + journal[-1].num_rows - starts[0] if journal else 0
        columns = segments[0].columns if segments else (
            list(journal_schema.names) if journal_schema is not None else list(SCHEMA.names))
        self._snap = _Snapshot(tuple(segments), journal, starts, live, metadata,
                               sum(s.rows for s in segments) + journal_rows, columns)

    @staticmethod
    def _list(path: Path) -> tuple[list[str], bool]:
        """The directory's names and whether a recorder holds it. Live means the lock is held,
        for the whole recording (between a seal and the next flush there is no journal)."""
        for _ in range(3):
            try:
                names = os.listdir(path)
            except OSError as exc:
                raise NotALogError(f"{path} cannot be read: {exc.strerror}") from exc
            live = lock_is_held(path)
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
        return self._snap.events

    def _segment_symbols(self, seg: Segment) -> list[str]:
        if seg.path not in self._symbols_cache:
            if seg.rows == 0:
                self._symbols_cache[seg.path] = []
            else:
                try:
                    col = pq.read_table(seg.path, columns=["symbol"], read_dictionary=["symbol"])
                    chunks = col.column(0).unify_dictionaries().chunks
                    values: set[str] = set()
                    for chunk in chunks:
                        used = np.unique(chunk.indices.to_numpy(zero_copy_only=False))
                        values.update(chunk.dictionary.take(pa.array(used)).to_pylist())
                except (pa.ArrowException, OSError) as exc:
                    raise LogDamagedError(f"{self.name}: segment {seg.path.name} cannot be read "
                                          f"({exc}): run `ticktape verify`") from exc
                self._symbols_cache[seg.path] = sorted(values)
        return self._symbols_cache[seg.path]

    def info(self) -> LogInfo:
        snap = self._snap
        segments, journal, live, metadata = snap.segments, snap.journal, snap.live, snap.metadata
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
            gaps=[g for seg in segments for g in seg.metadata.get("segment", {}).get("gaps", [])],
        )

    # -- reading ---------------------------------------------------------------------------
    def seq_at_ts(self, ts_ns: int) -> int:
        """The first seq whose ts >= ts_ns (events when none), by bisecting segments then rows."""
        segments, journal = self._snap.segments, self._snap.journal
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
                     columns: list[str] | None = None, *,
                     dictionary_symbols: bool = False) -> Iterator[pa.RecordBatch]:
        """The log's events from from_seq on, in seq order, without loading the log whole.
        `columns` defaults to the required columns (SCHEMA); pass `log.columns` for all.
        `dictionary_symbols`: sealed segments hand `symbol` over dictionary-encoded, as they
        store it (no string per row; the journal's tail stays plain strings), for readers
        that only group by symbol (analysis.streaming.symbol_codes takes both)."""
        names = columns or SCHEMA.names
        snap = self._snap
        expected = from_seq
        base = 0
        for seg in snap.segments:
            end = base + seg.rows
            if end > expected:
                yield from self._segment_batches(seg, base, expected, batch_rows, names,
                                                 dictionary_symbols)
                expected = end
            base = end
        # A follower asks for the journal's tail: find its batch by bisection, not a scan.
        first_needed = max(0, bisect.bisect_right(snap.journal_starts, expected) - 1)
        for first, batch in zip(snap.journal_starts[first_needed:], snap.journal[first_needed:],
                                strict=True):
            if first + batch.num_rows > expected:
                piece = batch.slice(max(0, expected - first))
                yield piece.select(names)
                expected = first + batch.num_rows

    def _segment_batches(self, seg: Segment, base: int, from_seq: int, batch_rows: int,
                         names: list[str], dictionary_symbols: bool = False
                         ) -> Iterator[pa.RecordBatch]:
        try:
            pf = pq.ParquetFile(seg.path, read_dictionary=(
                ["symbol"] if dictionary_symbols and "symbol" in names else None))
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


