"""Damage a log on purpose, the way a disk or an operator would, for negative tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

__all__ = ["rot_column"]


def rot_column(segment: Path, column: str = "price") -> None:
    """Overwrite the first page header of `column` in every row group with garbage.

    The footer stays intact, so the log still opens and summarizes (schema, row counts,
    seq/ts statistics, symbols), and fails only when that column's pages are read."""
    meta = pq.ParquetFile(segment).metadata
    names = meta.schema.to_arrow_schema().names
    index = names.index(column)
    data = bytearray(segment.read_bytes())
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group).column(index)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start:start + 32] = b"\xff" * 32
    segment.write_bytes(bytes(data))
