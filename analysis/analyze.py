"""`ticktape analyze`: indicator columns for every event, streamed into a Parquet file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import AnalysisError, EmptyLogError
from analysis.streaming import IndicatorSpec, StreamingIndicators
from recorder.log import Log, atomic_path

__all__ = ["AnalyzeConfig", "analyze", "check_output_path"]


@dataclass(frozen=True, kw_only=True)
class AnalyzeConfig:
    log: Path
    out: Path
    spec: IndicatorSpec
    batch_rows: int = 262_144


def check_output_path(out: Path, log: Path) -> None:
    """Refuse outputs that cannot be written or that would land inside the log itself."""
    out_abs, log_abs = out.resolve(), log.resolve()
    if out_abs == log_abs or log_abs in out_abs.parents:
        raise AnalysisError(f"output {out} must not be inside the log {log}")
    if out.is_dir():
        raise AnalysisError(f"output {out} is a directory")
    parent = out_abs.parent
    if not parent.is_dir():
        raise AnalysisError(f"cannot write {out}: directory {out.parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise AnalysisError(f"cannot write {out}: permission denied")


def analyze(config: AnalyzeConfig, progress: Callable[[int, int | None], None] | None = None
            ) -> int:
    """Write seq, ts, symbol, price and one column per indicator; returns the row count."""
    log = Log(config.log)
    total = log.events
    if total == 0:
        raise EmptyLogError(f"log {log.name} is empty: nothing to analyze")
    check_output_path(config.out, config.log)
    engine = StreamingIndicators(config.spec)
    names = config.spec.columns()
    fields = [pa.field(n, pa.bool_() if n == "anomaly" else pa.float64()) for n in names]
    meta = {"ticktape_analysis": json.dumps(
        {"log": log.name, "indicators": asdict(config.spec)}, sort_keys=True)}
    written = 0
    try:
        with atomic_path(config.out) as tmp:
            writer: pq.ParquetWriter | None = None
            try:
                for batch in log.iter_batches(batch_rows=config.batch_rows):
                    ts = batch.column("ts").cast(pa.int64()).to_numpy()
                    price = batch.column("price").to_numpy()
                    cols = engine.update(batch.column("symbol"), ts, price,
                                         batch.column("size").to_numpy())
                    arrays = [batch.column("seq"), batch.column("ts"), batch.column("symbol"),
                              batch.column("price")]
                    # Indicators that do not exist yet (first n-1 prices) are nulls, not NaN.
                    arrays += [pa.array(cols[n]) if n == "anomaly"
                               else pa.array(cols[n], mask=np.isnan(cols[n])) for n in names]
                    out = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(
                        [batch.schema.field(i) for i in range(4)] + fields, metadata=meta))
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, out.schema, compression="zstd")
                    writer.write_batch(out)
                    written += out.num_rows
                    if progress:
                        progress(written, total)
            finally:
                if writer is not None:
                    writer.close()
    except OSError as exc:
        raise AnalysisError(f"cannot write {config.out}: {exc.strerror or exc}") from exc
    return written
