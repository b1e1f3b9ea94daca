"""Importing exchange trade dumps into ticktape logs: one module per format, one pipeline.

Modules: `config` (ImportConfig), `inputs` (plain/gzip/zip files, checksums), `detect`
(recognising a format from content), `binance`, `tardis`, `bybit`, `csvmap` (the formats),
`blocks` (normalized rows, the shared order and duplicate rule), `merge` (k-way merge,
sorted runs), `pipeline` (import_files: staging, writing, placing the log).
"""

from recorder.importers.config import FORMATS, ImportConfig, parse_column_map
from recorder.importers.errors import (
    ChecksumError,
    ImportInputError,
    MalformedRowError,
    UnrecognisedFormatError,
)
from recorder.importers.pipeline import ImportReport, import_files
from recorder.importers.symbols import normalize_symbol

__all__ = [
    "FORMATS",
    "ChecksumError",
    "ImportConfig",
    "ImportInputError",
    "ImportReport",
    "MalformedRowError",
    "UnrecognisedFormatError",
    "import_files",
    "normalize_symbol",
    "parse_column_map",
]
