"""`ticktape import`: files -> recognised, checked, merged in time order, de-duplicated -> one log.

The log is written into a hidden sibling directory (`.NAME.import-PID`) and moved into place
only once every row of every file has been read and checked: a failure at any point (a
malformed row, a checksum mismatch, Ctrl-C) leaves no log, and a log that was there before
is untouched (with --overwrite it is swapped for the new one in one atomic step at the end).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recorder.errors import LogExistsError, LogLockedError, TicktapeError
from recorder.importers.base import FileReader
from recorder.importers.blocks import Block, PairTable, dedupe, sort_block
from recorder.importers.config import ImportConfig
from recorder.importers.detect import reader_for
from recorder.importers.errors import ImportInputError
from recorder.importers.inputs import InputFile
from recorder.importers.merge import NotInOrder, Source, merge, read_run, write_run
from recorder.log.files import exchange_and_unlock, fsync_dir, lock_is_held, take_lock
from recorder.log.schema import JOURNAL, LOCK, SEGMENT_RE, SIDES, TMP_PREFIX, iso_ns
from recorder.log.writer import LogWriter

__all__ = ["ImportReport", "import_files"]

_STAGING_INFIX = ".import-"
_SIDE_DICT = pa.array(list(SIDES))
Progress = Callable[[int, int | None], None]


@dataclass
class ImportReport:
    """What an import did; `to_json` is the `--json` summary."""

    log: str
    format: str
    detected: bool  # True: recognised from the content (no --format)
    files: int
    events: int = 0
    duplicates_dropped: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    symbols: dict[str, str] = field(default_factory=dict)  # ticktape symbol -> exchange's own
    venues: list[str] = field(default_factory=list)
    checksums_verified: int = 0
    sorted_in_runs: list[str] = field(default_factory=list)  # files not in time order
    variants: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"log": self.log, "format": self.format, "detected": self.detected,
                "files": self.files, "events": self.events,
                "duplicates_dropped": self.duplicates_dropped,
                "first_ts": iso_ns(self.first_ts), "last_ts": iso_ns(self.last_ts),
                "first_ts_ns": self.first_ts, "last_ts_ns": self.last_ts,
                "symbols": sorted(self.symbols), "exchange_symbols": self.symbols,
                "venues": self.venues, "checksums_verified": self.checksums_verified,
                "sorted_in_runs": self.sorted_in_runs, "variants": self.variants}


def import_files(cfg: ImportConfig, *, progress: Progress | None = None) -> ImportReport:
    """Import cfg.files into the log cfg.log; see the module docstring for the guarantees."""
    target = cfg.log
    _check_target(target, cfg.overwrite)
    inputs = [InputFile.inspect(path, rank) for rank, path in enumerate(sorted(cfg.files))]
    readers = [reader_for(inp, cfg) for inp in inputs]
    formats = sorted({r.format for r in readers})
    if len(formats) > 1:
        listing = "; ".join(f"{r.inp.path.name}: {r.format}" for r in readers)
        raise ImportInputError(f"the files are in different formats ({listing}); import each "
                               "format into its own log")
    report = ImportReport(str(target), formats[0], cfg.format is None, len(inputs))
    report.variants = sorted({r.variant for r in readers if r.variant})
    report.checksums_verified = sum(inp.verify_checksum() for inp in inputs)
    _remove_leftovers(target)
    staging = target.parent / f".{target.name}{_STAGING_INFIX}{os.getpid()}"
    runs_dir = staging.with_name(staging.name + ".runs")
    unsorted: set[int] = set()
    try:
        while True:
            try:
                _write(cfg, readers, unsorted, staging, runs_dir, report, progress)
                break
            except NotInOrder as signal:
                # Found late (after the file's first block): sort that file in runs and start over.
                unsorted.add(int(signal.source.rank[0]))
                shutil.rmtree(staging, ignore_errors=True)
                shutil.rmtree(runs_dir, ignore_errors=True)
        report.sorted_in_runs = [str(readers[i].inp.path) for i in sorted(unsorted)]
        _place(staging, target, cfg.overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return report


def _write(cfg: ImportConfig, readers: list[FileReader], unsorted: set[int], staging: Path,
           runs_dir: Path, report: ImportReport, progress: Progress | None) -> None:
    pairs = PairTable()
    total = sum(r.inp.size for r in readers)
    finished = {"bytes": 0}
    sources: list[Source] = []
    for reader in readers:
        rank = reader.inp.rank
        if rank not in unsorted:
            first = _first_block(reader, pairs)
            if first is None:
                finished["bytes"] += reader.inp.size
                continue
            if len(first) < 2 or not bool(np.any(np.diff(first.ts) < 0)):
                sources.append(Source(str(reader.inp.path), (rank, 0), int(first.ts[0]),
                                      _counted(reader, pairs, finished)))
                continue
            unsorted.add(rank)  # found in its first block: no restart needed
        sources.extend(_runs(reader, pairs, cfg.run_rows, runs_dir))
        finished["bytes"] += reader.inp.size
        if progress is not None:
            progress(finished["bytes"], total)

    optional = ("trade_id", "venue", "recv_ts") if report.format == "tardis-trades" \
        else ("trade_id", "venue")
    metadata = {"source": f"import:{report.format}"}
    report.duplicates_dropped = report.events = 0
    report.first_ts = report.last_ts = None
    try:
        with LogWriter(staging, metadata, segment_rows=cfg.segment_rows,
                       optional_columns=optional) as writer:
            for block in merge(sources):
                block, dropped = dedupe(block)
                report.duplicates_dropped += dropped
                if report.first_ts is None:
                    report.first_ts = int(block.ts[0])
                report.last_ts = int(block.ts[-1])
                writer.append(_to_log_batch(block, writer.next_seq, pairs, optional))
                if progress is not None:
                    done = finished["bytes"] + sum(r.raw_position() for r in readers
                                                   if r.inp.rank not in unsorted)
                    progress(min(done, total), total)
            report.events = writer.next_seq
            if progress is not None:
                progress(total, total)
    except OSError as exc:
        raise ImportInputError(f"cannot write {cfg.log}: {exc.strerror or exc}") from exc
    used = sorted(pairs.pairs, key=lambda p: (p[1], p[0] or ""))
    report.symbols = {symbol: pairs.native.get(symbol, symbol) for _, symbol in used}
    report.venues = sorted({venue for venue, _ in used if venue})


def _first_block(reader: FileReader, pairs: PairTable) -> Block | None:
    blocks = reader.blocks(pairs)
    try:
        return next(iter(blocks), None)
    finally:
        blocks.close()  # type: ignore[attr-defined]


def _counted(reader: FileReader, pairs: PairTable,
             finished: dict[str, int]) -> Callable[[], Iterator[Block]]:
    """The reader's blocks; once read to the end, its bytes count as done for the progress bar."""
    def open_blocks() -> Iterator[Block]:
        yield from reader.blocks(pairs)
        finished["bytes"] += reader.inp.size
    return open_blocks


def _runs(reader: FileReader, pairs: PairTable, run_rows: int, runs_dir: Path) -> list[Source]:
    """Sort a file that is not in time order: sorted runs of `run_rows` rows on disk, each a
    source of the merge."""
    runs_dir.mkdir(exist_ok=True)
    sources: list[Source] = []
    pending: list[Block] = []
    rows = 0

    def spill() -> None:
        nonlocal rows
        index = len(sources)
        path = runs_dir / f"{reader.inp.rank}-{index}.arrow"
        first_ts = write_run(sort_block(Block.concat(pending)), path)
        sources.append(Source(f"{reader.inp.path} (run {index})", (reader.inp.rank, index),
                              first_ts, lambda: read_run(path)))
        pending.clear()
        rows = 0

    for block in reader.blocks(pairs):
        pending.append(block)
        rows += len(block)
        if rows >= run_rows:
            spill()
    if pending:
        spill()
    return sources


def _to_log_batch(block: Block, first_seq: int, pairs: PairTable,
                  optional: tuple[str, ...]) -> pa.RecordBatch:
    n = len(block)
    symbols = pa.array([symbol for _, symbol in pairs.pairs], pa.string())
    venues = pa.array([venue for venue, _ in pairs.pairs], pa.string())
    codes = pa.array(block.pair, pa.int32())
    if block.key is not None:
        trade_id = pa.array(block.key).cast(pa.string())
    else:
        assert block.ids is not None
        trade_id = block.ids
    columns: list[pa.Array] = [
        pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64)),
        pa.array(block.ts).cast(pa.timestamp("ns", tz="UTC")),
        pa.DictionaryArray.from_arrays(codes, symbols),
        pa.array(block.price), pa.array(block.size),
        pa.DictionaryArray.from_arrays(pa.array(block.side, pa.int8()), _SIDE_DICT),
        trade_id, pa.DictionaryArray.from_arrays(codes, venues),
    ]
    names = ["seq", "ts", "symbol", "price", "size", "side", "trade_id", "venue"]
    if "recv_ts" in optional:
        recv = block.recv if block.recv is not None else np.zeros(n, np.int64)
        columns.append(pa.array(recv).cast(pa.timestamp("ns", tz="UTC")))
        names.append("recv_ts")
    return pa.RecordBatch.from_arrays(columns, names=names)


# -- the target ------------------------------------------------------------------------------
def _check_target(target: Path, overwrite: bool) -> None:
    """Refuse early what _place would refuse at the end."""
    if target.suffix == ".parquet":
        raise LogExistsError(f"{target}: import writes a log directory; drop the .parquet suffix")
    if target.exists() and not target.is_dir():
        raise LogExistsError(f"{target} exists and is not a log directory")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise LogExistsError(f"log {target} exists; pass --overwrite to replace it")
        entries = [e.name for e in target.iterdir()]
        if not all(SEGMENT_RE.match(n) or n in (JOURNAL, LOCK) or n.startswith(TMP_PREFIX)
                   for n in entries):
            raise LogExistsError(f"{target} holds files that are not a ticktape log's; "
                                 "refusing to delete them")
        if lock_is_held(target):
            raise LogLockedError(f"{target} is being written by another live recorder")


def _place(staging: Path, target: Path, overwrite: bool) -> None:
    _check_target(target, overwrite)
    try:
        if target.is_dir() and any(target.iterdir()):
            # No recorder may start on the old log while it is swapped out.
            exchange_and_unlock(target, staging, take_lock(target))
            shutil.rmtree(staging)
            return
        if target.is_dir():
            target.rmdir()
        os.rename(staging, target)
        fsync_dir(target.parent)
    except OSError as exc:
        if isinstance(exc, TicktapeError):
            raise
        raise ImportInputError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _remove_leftovers(target: Path) -> None:
    """Staging directories of imports that were killed (their process is gone)."""
    parent = target.parent
    if not parent.is_dir():
        return
    prefix = f".{target.name}{_STAGING_INFIX}"
    for entry in parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix):].removesuffix(".runs")
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry)
