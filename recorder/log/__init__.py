"""The ticktape event log: the one package that knows how a log is laid out on disk.

Modules: `schema` (the format, documented at its top), `files` (atomic writes, locks),
`segments` (sealed segments and the journal), `reader` (Log), `writer` (LogWriter),
`verify`, `recover` and `compact` (the maintenance commands).
"""

from recorder.log.compact import CompactReport, compact_log
from recorder.log.files import atomic_path
from recorder.log.reader import Log, LogInfo
from recorder.log.recover import RecoverReport, recover_log
from recorder.log.schema import (
    DEFAULT_SEGMENT_ROWS,
    FORMAT_VERSION,
    JOURNAL,
    METADATA_KEY,
    PARQUET_OPTIONS,
    SCHEMA,
    SIDES,
    is_log_dir_listing,
    iso_ns,
    make_batch,
)
from recorder.log.verify import VerifyReport, verify_log
from recorder.log.writer import LogWriter

__all__ = [
    "DEFAULT_SEGMENT_ROWS",
    "FORMAT_VERSION",
    "JOURNAL",
    "METADATA_KEY",
    "PARQUET_OPTIONS",
    "SCHEMA",
    "SIDES",
    "CompactReport",
    "Log",
    "LogInfo",
    "LogWriter",
    "RecoverReport",
    "VerifyReport",
    "atomic_path",
    "compact_log",
    "is_log_dir_listing",
    "iso_ns",
    "make_batch",
    "recover_log",
    "verify_log",
]
