"""`ticktape verify`: check everything the format promises, reporting problems, never raising them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recorder.errors import LogDamagedError, LogNotFoundError, NotALogError
from recorder.log.files import lock_is_held
from recorder.log.schema import JOURNAL, SCHEMA, SIDES, TMP_PREFIX, check_schema, parse_metadata
from recorder.log.segments import column_range

__all__ = ["VerifyReport", "verify_log"]


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
    metadata: dict[str, Any] | None = None  # the segments' `ticktape` metadata, when readable
    # A live recorder's trade-id gaps (segment notes): facts about the source, not damage.
    gaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def missing_gaps(self) -> list[dict[str, Any]]:
        """Gaps with trades still missing (a backfilled gap is not reported as missing)."""
        return [g for g in self.gaps if g.get("missing")]

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "ok": self.ok, "events": self.events,
                "segments": self.segments, "needs_recovery": self.needs_recovery,
                "live": self.live, "regenerated": self.regenerated, "problems": self.problems,
                "gaps": self.missing_gaps}


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


def verify_log(path: Path | str) -> VerifyReport:
    """Check everything the format promises; problems are reported, never raised."""
    root = Path(path)
    if not root.exists():
        raise LogNotFoundError(f"no such log: {root}")
    report = VerifyReport(name=root.stem if root.is_file() else root.name, path=str(root))
    files: list[Path]
    if root.is_dir():
        names = sorted(os.listdir(root))
        live = lock_is_held(root)
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
            seg_meta = parse_metadata(meta.metadata, file.name)
            check_schema(meta.schema.to_arrow_schema(), file.name)
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
        report.gaps.extend(seg_meta.get("segment", {}).get("gaps", []))
        first = column_range(file, meta)[0] if meta.num_rows else -1
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
    report.metadata = metadata
    return report


def _strip_volatile(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "segment"}
