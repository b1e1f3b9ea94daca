"""The two kinds of files a log holds: sealed Parquet segments and the open segment's journal."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.errors import LogDamagedError
from recorder.log.files import atomic_path
from recorder.log.schema import (
    OPTIONAL_COLUMNS,
    PARQUET_OPTIONS,
    SCHEMA,
    TS_TYPE,
    check_schema,
    parse_metadata,
    segment_name,
)

__all__ = ["JournalTail", "Segment", "column_range", "open_segment", "read_journal", "write_segment"]


@dataclass(frozen=True)
class Segment:
    """A sealed segment: where it is, the seqs it holds and its event-time range."""

    path: Path
    first_seq: int
    rows: int
    ts_min: int | None
    ts_max: int | None
    metadata: dict[str, Any]
    columns: list[str]  # required columns, then the optional ones it carries


def write_segment(directory: Path, table: pa.Table, first_seq: int, row_group_size: int) -> Path:
    """Seal a segment atomically: a reader sees the whole segment or none of it."""
    final = directory / segment_name(first_seq)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, row_group_size=max(1, row_group_size), **PARQUET_OPTIONS)
    return final


def open_segment(path: Path) -> Segment:
    """Read a segment's footer (metadata, schema, seq and ts ranges), not its data."""
    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise LogDamagedError(
            f"segment {path.name} is unreadable (truncated or corrupt): run `ticktape verify`"
        ) from exc
    info = parse_metadata(meta.metadata, str(path))
    check_schema(meta.schema.to_arrow_schema(), str(path))
    seq_min, ts_min, ts_max = column_range(path, meta)
    names = meta.schema.to_arrow_schema().names
    columns = [*SCHEMA.names, *(n for n in OPTIONAL_COLUMNS if n in names)]
    return Segment(path, seq_min, meta.num_rows, ts_min, ts_max, info, columns)


def column_range(path: Path, meta: pq.FileMetaData) -> tuple[int, int | None, int | None]:
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


class JournalTail:
    """Reads a journal (an Arrow IPC stream being appended to) incrementally.

    Each `read()` parses only the bytes appended since the previous one, so following a live
    log costs the same whatever the journal's length. A torn last message (a write in
    progress, or a kill) is left for the next read; a new journal (another inode, or a
    shorter file) is read from its start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.schema: pa.Schema | None = None
        self.batches: tuple[pa.RecordBatch, ...] = ()
        self.starts: tuple[int, ...] = ()  # first seq of each batch, computed once per batch
        self.good_bytes = 0  # bytes up to the end of the last complete message
        self._identity: tuple[int, int] | None = None

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self.schema, self.batches, self.starts = None, (), ()
        self.good_bytes, self._identity = 0, identity

    def read(self) -> tuple[pa.Schema | None, tuple[pa.RecordBatch, ...]]:
        """The journal's schema and complete batches, as of now."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            self._reset(None)
            return None, ()
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino)
            if identity != self._identity or st.st_size < self.good_bytes:
                self._reset(identity)
            if st.st_size == self.good_bytes:
                return self.schema, self.batches
            data = os.pread(fd, st.st_size - self.good_bytes, self.good_bytes)
        finally:
            os.close(fd)
        self._parse(data)
        return self.schema, self.batches

    def _parse(self, data: bytes) -> None:
        source = pa.BufferReader(pa.py_buffer(data))
        reader = pa.ipc.MessageReader.open_stream(source)
        new: list[pa.RecordBatch] = []
        consumed = 0
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):
                break  # torn write: everything before it is intact
            try:
                if self.schema is None:
                    if message.type != "schema":
                        break
                    self.schema = pa.ipc.read_schema(message)
                elif message.type == "record batch":
                    batch = pa.ipc.read_record_batch(message, self.schema)
                    if batch.num_rows:
                        new.append(batch)
            except (pa.ArrowInvalid, OSError):
                break
            consumed = source.tell()
        self.good_bytes += consumed
        if new:
            self.batches = (*self.batches, *new)
            self.starts = (*self.starts, *(int(b.column(0)[0].as_py()) for b in new))


def read_journal(path: Path) -> tuple[pa.Schema | None, tuple[pa.RecordBatch, ...], int]:
    """A whole journal at once: schema, complete batches, and the bytes they span."""
    tail = JournalTail(path)
    schema, batches = tail.read()
    return schema, batches, tail.good_bytes
