"""`ticktape compact`: merge a finished log's small segments into large ones, atomically.

The new segments are written into a hidden sibling directory, checked, and the two
directories are then swapped in one step (renameat2 RENAME_EXCHANGE). A reader resolving the
log's path sees the old segments or the new ones, never a mix and never fewer events; a kill
at any moment leaves the old log intact (plus, at worst, a hidden `.NAME.compact-*` sibling
that the next `compact` removes).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.errors import LogDamagedError, LogLockedError, NotALogError
from recorder.log.files import exchange_dirs, release_lock, take_lock
from recorder.log.reader import Log
from recorder.log.schema import DEFAULT_SEGMENT_ROWS, SCHEMA
from recorder.log.writer import LogWriter

__all__ = ["CompactReport", "compact_log"]

_STAGING_INFIX = ".compact-"


@dataclass(frozen=True)
class CompactReport:
    name: str
    events: int
    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    compacted: bool  # False: already compact, nothing was rewritten

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _staging_dirs(root: Path) -> list[Path]:
    prefix = f".{root.name}{_STAGING_INFIX}"
    return [p for p in root.parent.iterdir() if p.name.startswith(prefix)]


def compact_log(path: Path | str, *, segment_rows: int = DEFAULT_SEGMENT_ROWS) -> CompactReport:
    """Rewrite the log as segments of `segment_rows` rows (the last one shorter)."""
    root = Path(path)
    log = Log(root)  # refuses what is not a log, or needs recovery
    if root.is_file():
        raise NotALogError(f"{root} is a single-file log: there are no segments to merge")
    if log.live:
        raise LogLockedError(f"{root} is being recorded: compact it once the recorder has stopped")
    lock_fd = take_lock(root)  # no recorder may start on it meanwhile
    swapped = False
    try:
        log.refresh()
        before = log.info()
        for leftover in _staging_dirs(root):
            shutil.rmtree(leftover)  # a compaction killed before its swap
        sizes = [s.rows for s in log.segments]
        if all(rows == segment_rows for rows in sizes[:-1]) and (
                not sizes or sizes[-1] <= segment_rows):
            return CompactReport(log.name, before.events, len(sizes), len(sizes), before.bytes,
                                 before.bytes, compacted=False)
        staging = root.parent / f".{root.name}{_STAGING_INFIX}{os.getpid()}"
        # "segment" notes belong to one segment: the gaps of all go into the first new one.
        metadata = {k: v for k, v in log.metadata.items() if k not in ("format", "segment")}
        try:
            optional = tuple(log.columns[len(SCHEMA):])
            with LogWriter(staging, metadata, segment_rows=segment_rows,
                           optional_columns=optional) as writer:
                if before.gaps:
                    writer.segment_notes = {"gaps": before.gaps}
                for batch in log.iter_batches(batch_rows=min(segment_rows, 262_144),
                                              columns=log.columns):
                    writer.append(batch)
            after = Log(staging).info()
            if after.events != before.events:  # never fewer: refuse rather than swap
                raise LogDamagedError(f"compacting {root} produced {after.events} events, "
                                      f"expected {before.events}; the log is unchanged")
            exchange_dirs(root, staging)
            swapped = True
        except BaseException:
            if not swapped:
                shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        if swapped:
            os.close(lock_fd)  # its lock file went with the old directory, now at `staging`
        else:
            release_lock(root, lock_fd)
    shutil.rmtree(staging, ignore_errors=True)
    return CompactReport(log.name, before.events, len(sizes), after.segments, before.bytes,
                         after.bytes, compacted=True)
