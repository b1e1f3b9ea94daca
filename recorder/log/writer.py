"""Writing a log: append batches, journal them every flush, seal segments atomically."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from recorder.errors import LogExistsError, LogLockedError, TicktapeError
from recorder.log.files import fsync_dir, lock_is_held, release_lock, take_lock
from recorder.log.schema import (
    DEFAULT_SEGMENT_ROWS,
    JOURNAL,
    LOCK,
    METADATA_KEY,
    SEGMENT_RE,
    TMP_PREFIX,
    conform,
    metadata_json,
    parse_metadata,
    schema_with,
)
from recorder.log.segments import write_segment

__all__ = ["LogWriter"]


class LogWriter:
    """Appends batches to a new log: journal every flush, seal every segment_rows rows and,
    with a seal_interval, at the first flush once the open segment is that many seconds old
    (so plain Parquet readers see a live log at most one seal interval plus one flush behind).
    Fast recordings pass no seal_interval: their segment boundaries must not depend on time."""

    def __init__(self, path: Path | str, metadata: dict[str, Any], *, overwrite: bool = False,
                 segment_rows: int = DEFAULT_SEGMENT_ROWS,
                 seal_interval: float | None = None,
                 optional_columns: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        if self.path.suffix == ".parquet":
            raise LogExistsError(f"{self.path}: record writes a log directory; drop the .parquet suffix")
        self.schema = schema_with(metadata, optional_columns)
        self.segment_rows = segment_rows
        self.seal_interval = seal_interval
        self._opened_at: float | None = None  # monotonic time of the open segment's first row
        # Written into the next sealed segment's metadata under "segment", then cleared.
        self.segment_notes: dict[str, Any] = {}
        self._prepare_directory(overwrite)
        self._lock_fd: int | None = take_lock(self.path)
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
                ours = all(SEGMENT_RE.match(e.name) or e.name in (JOURNAL, LOCK)
                           or e.name.startswith(TMP_PREFIX) for e in entries)
                if not ours:
                    raise LogExistsError(f"{path} holds files that are not a ticktape log's; "
                                         "refusing to delete them")
                if lock_is_held(path):
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
        batch = conform(batch, self.schema)
        if self._opened_at is None:
            self._opened_at = time.monotonic()
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
        """Make every appended event durable: in the journal (fsync), or in a sealed segment
        when the open one is older than the seal interval."""
        if (self.seal_interval is not None and self._opened_at is not None
                and time.monotonic() - self._opened_at >= self.seal_interval):
            self.seal(wait=True)  # durable when flush returns, as a journal write would be
            return
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
        if self.segment_notes:
            # Facts about this segment only (e.g. a live feed's trade-id gaps), under the one
            # metadata key that may differ between segments ("segment").
            meta = parse_metadata(self.schema.metadata, "schema")
            meta["segment"] = dict(self.segment_notes)
            table = table.replace_schema_metadata({METADATA_KEY: metadata_json(meta)})
            self.segment_notes = {}
        first_seq = self.sealed_rows
        had_journal = self._journal is not None
        self._close_journal()
        self.sealed_rows += table.num_rows
        self.segments_written += 1
        self._open, self._open_rows, self._journaled = [], 0, 0
        self._opened_at = None
        self._sealing = self._sealer.submit(self._write_segment, table, first_seq, had_journal)
        if wait:
            self._wait_sealed()

    def _write_segment(self, table: pa.Table, first_seq: int, had_journal: bool) -> None:
        write_segment(self.path, table, first_seq, self.segment_rows)
        # Only now may the journal go: until the rename, it is the only durable copy.
        if had_journal:
            with contextlib.suppress(FileNotFoundError):
                (self.path / JOURNAL).unlink()
            fsync_dir(self.path)

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
        release_lock(self.path, self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
