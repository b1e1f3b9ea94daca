"""The event log's format: schema, file names, metadata and Parquet options, in one place.

A log is a directory `NAME/` of Parquet segments that any Parquet reader reads as one table
ordered by `seq`, or a single `NAME.parquet` file with the same schema and metadata.

Layout of a log directory:
  seg-<first_seq:012d>.parquet   sealed segments, never rewritten (`ticktape compact` aside)
  _journal.arrows                the open segment as an Arrow IPC stream, appended and fsynced
                                 every flush interval; readable up to its last complete batch
  _lock                          flock held by the live recorder (and by recover / compact)
  .tmp-*                         a file being written atomically (written, fsynced, renamed)
Names starting with "_" or "." are skipped by pyarrow.dataset, pandas and DuckDB globs, so
any Parquet tool reads the sealed segments as one table. A directory is *one log* only if it
holds segments (`seg-*.parquet`) or a journal directly; any other directory is a folder of logs.

Columns (SCHEMA; optional columns may follow and are carried through):
  seq     int64                  0-based, +1 per event across the whole log
  ts      timestamp[ns, UTC]     event time, non-decreasing in seq order
  symbol  string (dict ok)       instrument, e.g. BTC-USD
  price   float64                finite, > 0
  size    float64                finite, > 0
  side    string (dict ok)       taker side: buy | sell | unknown (SIDES)
  trade_id, venue  string        optional (imported or live data)
  recv_ts timestamp[ns, UTC]     optional: when a live recorder received the event

Metadata: every segment (and the journal's schema) carries the key `ticktape`, a JSON object
with sorted keys (byte-stable):
  format     int, FORMAT_VERSION; a newer format is refused with "upgrade ticktape"
  source     "simulator" | "import:<format>" | "live:<venue>" | "watch:<url>"
  seed       int (simulated logs)
  simulator  {"seed", "rate", "time_resolution_ns", "symbols": [every SymbolParams field],
              "block_events"}
  start      ISO 8601 anchor of simulated time
  clock      "sim" | "wall"
  mode       "fast" | "realtime"
Readers refuse a log whose journal was left by a dead recorder (NeedsRecoveryError naming
`ticktape recover`); they never modify a log themselves. While a recorder holds the lock the
log is live: its journal is read as part of the log, which is how a growing log is followed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from recorder.errors import LogDamagedError, NotALogError

__all__ = [
    "DEFAULT_SEGMENT_ROWS",
    "FORMAT_VERSION",
    "JOURNAL",
    "LOCK",
    "METADATA_KEY",
    "OPTIONAL_COLUMNS",
    "PARQUET_OPTIONS",
    "SCHEMA",
    "SEGMENT_RE",
    "SIDES",
    "TMP_PREFIX",
    "TS_TYPE",
    "check_schema",
    "conform",
    "is_log_dir_listing",
    "iso_ns",
    "log_schema",
    "make_batch",
    "metadata_json",
    "parse_metadata",
    "schema_with",
    "segment_name",
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
# In this order after the required columns, when a log has them; nullable.
OPTIONAL_COLUMNS = {"trade_id": pa.string(), "venue": pa.string(), "recv_ts": TS_TYPE}
JOURNAL = "_journal.arrows"
LOCK = "_lock"
TMP_PREFIX = ".tmp-"
SEGMENT_RE = re.compile(r"^seg-(\d{12})\.parquet$")
DEFAULT_SEGMENT_ROWS = 1_000_000
# Chosen by measurement (docs/log-format.md): ~7.5 bytes/tick against ~16 with pyarrow defaults.
PARQUET_OPTIONS: dict[str, Any] = dict(
    compression="zstd",
    use_dictionary=["symbol", "price", "size", "side", "venue"],
    column_encoding={"seq": "DELTA_BINARY_PACKED", "ts": "DELTA_BINARY_PACKED"},
    write_statistics=["seq", "ts"],
)


def segment_name(first_seq: int) -> str:
    """A sealed segment's file name: its first seq, zero-padded, so name order is seq order."""
    return f"seg-{first_seq:012d}.parquet"


def is_log_dir_listing(names: list[str]) -> bool:
    """True if a directory holding these names is one log: segments or a journal, directly."""
    return JOURNAL in names or any(SEGMENT_RE.match(n) for n in names)


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


def log_schema(optional: tuple[str, ...] | list[str] = ()) -> pa.Schema:
    """SCHEMA followed by the named optional columns, in OPTIONAL_COLUMNS order."""
    unknown = set(optional) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError(f"unknown optional column(s): {', '.join(sorted(unknown))}")
    return pa.schema([*SCHEMA, *(pa.field(name, kind) for name, kind in OPTIONAL_COLUMNS.items()
                                 if name in optional)])


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` in exactly `schema` (dictionary columns decoded, metadata dropped), or ValueError."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    if batch.schema.names != schema.names:
        raise ValueError(f"batch columns {batch.schema.names} differ from the log's {schema.names}")
    columns = [col.cast(field.type) if col.type != field.type else col
               for col, field in zip(batch.columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def metadata_json(metadata: dict[str, Any]) -> str:
    """The `ticktape` value as stored: sorted keys, no spaces, so it is byte-stable."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"))


def schema_with(metadata: dict[str, Any], optional: tuple[str, ...] | list[str] = ()) -> pa.Schema:
    """The log schema (with `optional` columns) carrying `metadata` (format version added)
    under the `ticktape` key."""
    return log_schema(optional).with_metadata(
        {METADATA_KEY: metadata_json({"format": FORMAT_VERSION, **metadata})})


def parse_metadata(raw: dict[bytes, bytes] | None, where: str) -> dict[str, Any]:
    """The `ticktape` metadata of a file, validated; `where` names the file in messages."""
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


def check_schema(schema: pa.Schema, where: str) -> None:
    """Every required column is present with its type (dictionary and large_string allowed)."""
    for want in SCHEMA:
        if want.name not in schema.names:
            raise LogDamagedError(f"{where}: column {want.name!r} is missing")
        got = schema.field(want.name).type
        if isinstance(got, pa.DictionaryType):
            got = got.value_type
        if got != want.type and not (want.type == pa.string() and got == pa.large_string()):
            raise LogDamagedError(f"{where}: column {want.name!r} is {got}, expected {want.type}")
    for name, kind in OPTIONAL_COLUMNS.items():
        if name in schema.names:
            got = schema.field(name).type
            if isinstance(got, pa.DictionaryType):
                got = got.value_type
            if got != kind and not (kind == pa.string() and got == pa.large_string()):
                raise LogDamagedError(f"{where}: column {name!r} is {got}, expected {kind}")
