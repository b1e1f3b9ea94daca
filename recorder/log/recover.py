"""`ticktape recover`: seal a killed recorder's journal and clear what it left behind."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from recorder.errors import LogDamagedError, LogNotFoundError, NotALogError
from recorder.log.files import fsync_dir, release_lock, take_lock
from recorder.log.schema import (
    DEFAULT_SEGMENT_ROWS,
    JOURNAL,
    METADATA_KEY,
    SEGMENT_RE,
    TMP_PREFIX,
    check_schema,
    metadata_json,
    parse_metadata,
)
from recorder.log.segments import open_segment, read_journal, write_segment

__all__ = ["RecoverReport", "recover_log"]


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
    lock_fd = take_lock(root)
    try:
        for name in sorted(os.listdir(root)):
            if name.startswith(TMP_PREFIX):
                (root / name).unlink()
                report.removed_files.append(name)
        sealed = sorted(n for n in os.listdir(root) if SEGMENT_RE.match(n))
        next_seq = 0
        for name in sealed:
            seg = open_segment(root / name)
            if seg.first_seq != next_seq:
                raise LogDamagedError(f"segment {name} starts at seq {seg.first_seq}, expected "
                                      f"{next_seq}; sealed segments are never rewritten")
            next_seq += seg.rows
        journal_path = root / JOURNAL
        if journal_path.exists():
            schema, batches, good = read_journal(journal_path)
            report.dropped_bytes = journal_path.stat().st_size - good
            if schema is not None:
                meta = parse_metadata(schema.metadata, JOURNAL)
                check_schema(schema, JOURNAL)
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
                    table = table.replace_schema_metadata({METADATA_KEY: metadata_json(meta)})
                    final = write_segment(root, table, first_seq, DEFAULT_SEGMENT_ROWS)
                    report.sealed = final.name
                    report.recovered_events = table.num_rows
            journal_path.unlink()
            report.removed_files.append(JOURNAL)
            fsync_dir(root)
    finally:
        release_lock(root, lock_fd)
    if not any(SEGMENT_RE.match(n) for n in os.listdir(root)):
        raise NotALogError(f"{root} holds no events to recover")
    return report
