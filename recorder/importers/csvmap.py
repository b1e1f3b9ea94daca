"""csv: any CSV with a header, read through a column map (`--map ts=time,price=p,size=q,...`).

Fields: ts, price, size (required); side, symbol, trade_id, venue (optional). `--time-unit`:
s (seconds, a fraction allowed, kept to the µs), ms, us, ns (integers) or iso (ISO 8601; a
zone offset or Z, or none for UTC). `--side-from`: taker (buy/sell, any case: the taker
side, the default), maker (buy/sell of the resting order: flipped), buyer-maker-bool
(true/false: true means the taker sold). No side column: side `unknown`. No symbol column:
--symbol. No venue column: --venue, else none. No trade_id column: rows are never
de-duplicated. Trade ids are compared as strings (integers in canonical form keep their order).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recorder.importers.base import (
    TIME_UNIT_NS,
    CsvLayout,
    FileReader,
    pair_codes,
    side_codes,
    split_line,
)
from recorder.importers.blocks import BUY, SELL, UNKNOWN, Block, PairTable
from recorder.importers.config import ImportConfig
from recorder.importers.errors import UnrecognisedFormatError
from recorder.importers.inputs import InputFile

__all__ = ["CsvMapReader", "reader_for"]

_TAKER = pa.array(["buy", "sell", "unknown"])
_TAKER_CODES = np.array([BUY, SELL, UNKNOWN], np.int8)
_MAKER_CODES = np.array([SELL, BUY, UNKNOWN], np.int8)


def reader_for(inp: InputFile, cfg: ImportConfig, lines: list[str]) -> CsvMapReader:
    names = tuple(f.strip() for f in split_line(lines[0]))
    mapped = dict(cfg.column_map)
    missing = [column for column in mapped.values() if column not in names]
    if missing:
        raise UnrecognisedFormatError(
            f"{inp.path}: --map names column(s) {', '.join(map(repr, missing))} that the header "
            f"does not have (it has: {', '.join(names)})")
    if len(set(names)) != len(names):
        raise UnrecognisedFormatError(f"{inp.path}: the header repeats a column name")
    unit = cfg.time_unit
    types: dict[str, pa.DataType] = {
        mapped["ts"]: (pa.string() if unit == "iso" else pa.float64() if unit == "s"
                       else pa.int64()),
        mapped["price"]: pa.float64(), mapped["size"]: pa.float64()}
    for key in ("symbol", "trade_id", "venue"):
        if key in mapped:
            types[mapped[key]] = pa.string()
    if "side" in mapped:
        types[mapped["side"]] = pa.bool_() if cfg.side_from == "buyer-maker-bool" else pa.string()
    return CsvMapReader(inp, cfg, CsvLayout(names, types, header=True))


class CsvMapReader(FileReader):
    format = "csv"
    string_ids = True

    def convert(self, batch: pa.RecordBatch, first_line: int, pairs: PairTable) -> Block:
        mapped = dict(self.cfg.column_map)
        optional = {mapped[k] for k in ("trade_id", "venue") if k in mapped}
        required = [name for name in batch.schema.names if name not in optional]
        self.no_nulls(batch.select(required), first_line)
        n = batch.num_rows
        price = self.positive(batch, mapped["price"], first_line, f"price ({mapped['price']})")
        size = self.positive(batch, mapped["size"], first_line, f"size ({mapped['size']})")
        ts = self._times(batch.column(mapped["ts"]), first_line, mapped["ts"])
        if "side" not in mapped:
            side = np.full(n, UNKNOWN, np.int8)
        elif self.cfg.side_from == "buyer-maker-bool":
            side = np.where(batch.column(mapped["side"]).to_numpy(zero_copy_only=False), SELL, BUY)
        else:
            codes = _MAKER_CODES if self.cfg.side_from == "maker" else _TAKER_CODES
            side = side_codes(self, pc.utf8_lower(batch.column(mapped["side"])), first_line,
                              _TAKER, codes, name=f"side ({mapped['side']})")
        ids = batch.column(mapped["trade_id"]) if "trade_id" in mapped else pa.nulls(n, pa.string())
        ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
        venues = batch.column(mapped["venue"]) if "venue" in mapped else None
        if venues is not None and venues.null_count:
            venues = pc.fill_null(venues, "")
        symbols = batch.column(mapped["symbol"]) if "symbol" in mapped else None
        pair = pair_codes(self, venues, symbols, n, pairs)
        return Block(ts=ts, price=price, size=size, side=side.astype(np.int8), pair=pair, ids=ids)

    def _times(self, column: pa.Array, first_line: int, name: str) -> np.ndarray:
        unit = self.cfg.time_unit
        if unit == "iso":
            for target in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):
                try:
                    return pc.cast(column, target).cast(pa.int64()).to_numpy()
                except pa.ArrowInvalid:
                    continue
            for row, value in enumerate(column.to_pylist()):
                try:
                    pc.cast(pa.array([value]), pa.timestamp("ns", tz="UTC"))
                except pa.ArrowInvalid:
                    try:
                        pc.cast(pa.array([value]), pa.timestamp("ns"))
                    except pa.ArrowInvalid:
                        raise self.fail(first_line + row,
                                        f"{name} {value!r} is not an ISO 8601 time") from None
            raise self.fail(first_line, f"{name}: mixes times with and without a zone offset")
        values = column.to_numpy()
        if unit == "s":
            ns = np.rint(values * 1e6).astype(np.int64) * 1_000
            bad = ~np.isfinite(values) | (values < 0)
        else:
            assert unit is not None
            ns = values * TIME_UNIT_NS[unit]
            bad = (values < 0) | (values > np.iinfo(np.int64).max // TIME_UNIT_NS[unit])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise self.fail(first_line + row, f"{name} {values[row]!r} is not a time in {unit} "
                                              "since the epoch")
        return ns
