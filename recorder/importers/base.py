"""What every format shares: streaming a CSV in blocks with pyarrow, and validating its rows
with messages that name `file:line`."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recorder.importers.blocks import Block, PairTable
from recorder.importers.config import ImportConfig
from recorder.importers.errors import ImportInputError, MalformedRowError
from recorder.importers.inputs import InputFile, RawStream, read_errors
from recorder.importers.symbols import check_symbol, normalize_symbol

__all__ = ["TIME_UNIT_NS", "CsvLayout", "FileReader", "pair_codes", "side_codes", "split_line",
           "unit_from_magnitude"]

TIME_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# Integer epoch times by magnitude: [low, high) for each unit covers 1973 .. 5138.
_MAGNITUDE = {"ms": (10**11, 10**14), "us": (10**14, 10**17)}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_BOOLS = {"true", "false", "1", "0"}


def unit_from_magnitude(value: int) -> str | None:
    """'ms' or 'us' for an integer epoch time, judged by its size (None: neither)."""
    for unit, (low, high) in _MAGNITUDE.items():
        if low <= value < high:
            return unit
    return None


def split_line(line: str) -> list[str]:
    return next(csv.reader([line]), [])


@dataclass(frozen=True)
class CsvLayout:
    """How pyarrow reads one file: every column name in order, the types of those read."""

    names: tuple[str, ...]
    types: dict[str, pa.DataType] = field(default_factory=dict)
    header: bool = False


class FileReader:
    """One input file as validated Blocks; a subclass per format fills in `convert`."""

    format = ""
    string_ids = False  # True: trade ids are strings (ordered by length, then characters)

    def __init__(self, inp: InputFile, cfg: ImportConfig, layout: CsvLayout) -> None:
        self.inp = inp
        self.cfg = cfg
        self.layout = layout
        self._stream: RawStream | None = None

    @property
    def variant(self) -> str:
        """What the content was recognised as, for the summary (e.g. 'spot')."""
        return ""

    def where(self, line: int) -> str:
        return f"{self.inp.path}:{line}"

    def raw_position(self) -> int:
        return self._stream.raw_position() if self._stream is not None else 0

    def blocks(self, pairs: PairTable) -> Iterator[Block]:
        for batch, first_line in self._batches():
            if batch.num_rows:
                yield self.convert(batch, first_line, pairs)

    def convert(self, batch: pa.RecordBatch, first_line: int, pairs: PairTable) -> Block:
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        layout = self.layout
        first_line = 2 if layout.header else 1
        self._stream = stream = self.inp.open_stream()
        try:
            try:
                reader = pacsv.open_csv(
                    stream.stream,
                    read_options=pacsv.ReadOptions(column_names=list(layout.names),
                                                   skip_rows=int(layout.header),
                                                   block_size=self.cfg.block_bytes),
                    # Blank lines become rows of nulls, so every row is a line and the null
                    # check names the blank line.
                    parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                    convert_options=pacsv.ConvertOptions(
                        column_types=layout.types, include_columns=list(layout.types),
                        true_values=["true", "True", "TRUE", "1"],
                        false_values=["false", "False", "FALSE", "0"]),
                )
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    yield batch, first_line
                    first_line += batch.num_rows
            except pa.ArrowInvalid as exc:
                raise self._locate(first_line, exc) from exc
            except read_errors as exc:
                raise ImportInputError(f"{self.inp.path}: cannot read: {exc}") from exc
        finally:
            stream.close()

    def _locate(self, first_line: int, exc: pa.ArrowInvalid) -> ImportInputError:
        """pyarrow refused a block without saying which line: find it with a plain scan."""
        reason = str(exc).splitlines()[0]
        if "decompress" in reason.lower() or "gzip" in reason.lower():
            return ImportInputError(f"{self.inp.path}: cannot read: {reason}")
        names = self.layout.names
        for number, raw in self.inp.lines_from(first_line):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return MalformedRowError(f"{self.where(number)}: not UTF-8 text")
            fields = split_line(text)
            if len(fields) != len(names):
                return MalformedRowError(f"{self.where(number)}: expected {len(names)} fields "
                                         f"({','.join(names)}), got {len(fields)}: {text[:120]!r}")
            for name, value in zip(names, fields, strict=True):
                kind = self.layout.types.get(name)
                if kind is not None and value and not _converts(value, kind):
                    return MalformedRowError(f"{self.where(number)}: {name} {value!r} is not "
                                             f"{_describe(kind)}")
        return MalformedRowError(f"{self.inp.path}: malformed CSV after line {first_line - 1}: "
                                 f"{reason}")

    # -- validation helpers ------------------------------------------------------------------
    def fail(self, line: int, reason: str) -> MalformedRowError:
        return MalformedRowError(f"{self.where(line)}: {reason}")

    def no_nulls(self, batch: pa.RecordBatch, first_line: int) -> None:
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if column.null_count:
                index = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise self.fail(first_line + index, f"{name} is empty"
                                + (" (a blank line)" if all(c[index].as_py() is None
                                                            for c in batch.columns) else ""))

    def positive(self, batch: pa.RecordBatch, column: str, first_line: int,
                 label: str | None = None) -> np.ndarray:
        """The column's values, each a finite number > 0 (else the row is named, as `label`
        or the column's name)."""
        values = batch.column(column).to_numpy()
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise self.fail(first_line + index, f"{label or column} must be a finite number "
                                                f"> 0, got {float(values[index])}")
        return values

    def epoch_ints(self, values: np.ndarray, unit: str, name: str, first_line: int) -> np.ndarray:
        """Integer times in `unit` (the whole file's, judged from its first row) -> ns."""
        low, high = _MAGNITUDE[unit]
        bad = (values < low) | (values >= high)
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise self.fail(first_line + index,
                            f"{name} {values[index]} is not in {_UNIT_WORDS[unit]} like the first "
                            "row of this file")
        return values * TIME_UNIT_NS[unit]


def pair_codes(reader: FileReader, venues: pa.Array | None, symbols: pa.Array | None,
               n: int, pairs: PairTable, default_venue: str | None = None) -> np.ndarray:
    """Per-row (venue, symbol) codes from venue and symbol columns (None: --venue/--symbol,
    else `default_venue`); each distinct value is normalized once, not each row."""
    cfg = reader.cfg

    def encode(column: pa.Array | None) -> tuple[list[str | None], np.ndarray]:
        if column is None:
            return [None], np.zeros(n, np.int64)
        encoded = pc.dictionary_encode(column)
        return (encoded.dictionary.to_pylist(),
                encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64))

    venue_values, venue_index = encode(None if cfg.venue else venues)
    symbol_values, symbol_index = encode(None if cfg.symbol else symbols)
    table = np.empty((len(venue_values), len(symbol_values)), np.int32)
    for i, venue in enumerate(venue_values):
        for j, native in enumerate(symbol_values):
            if cfg.symbol is not None:
                symbol, native_name = cfg.symbol, None
            else:
                assert native is not None
                symbol = check_symbol(normalize_symbol(native), str(reader.inp.path))
                native_name = native
            table[i, j] = pairs.code(cfg.venue or venue or default_venue, symbol, native_name)
    return table[venue_index, symbol_index]


def side_codes(reader: FileReader, sides: pa.Array, first_line: int, allowed: pa.Array,
               codes: np.ndarray, name: str = "side") -> np.ndarray:
    """Map side strings to SIDES codes via `allowed` (codes[i] for allowed[i]); others refused."""
    index = pc.index_in(sides, value_set=allowed)
    if index.null_count:
        row = int(np.flatnonzero(index.is_null().to_numpy(zero_copy_only=False))[0])
        raise reader.fail(first_line + row, f"{name} {sides[row].as_py()!r} is not one of "
                                            f"{', '.join(allowed.to_pylist())}")
    return codes[index.to_numpy(zero_copy_only=False)]


_UNIT_WORDS = {"ms": "milliseconds", "us": "microseconds"}


def _converts(value: str, kind: pa.DataType) -> bool:
    if pa.types.is_integer(kind):
        return bool(_INT_RE.match(value))
    if pa.types.is_floating(kind):
        try:
            float(value)
        except ValueError:
            return False
        return True
    if pa.types.is_boolean(kind):
        return value.strip().lower() in _BOOLS
    return True


def _describe(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind):
        return "an integer"
    if pa.types.is_floating(kind):
        return "a number"
    if pa.types.is_boolean(kind):
        return "true or false"
    return f"a {kind}"
