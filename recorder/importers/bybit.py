"""bybit-trades: Bybit's public trading history (public.bybit.com/trading/SYMBOL/*.csv.gz).

  timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,
  foreignNotional[,...]                                                 header, .csv.gz
`timestamp` is seconds since the epoch with a fraction (e.g. 1735689600.0974), kept to the
microsecond; `side` (Buy/Sell) is the taker side; `trdMatchID` is the trade id; `size` is as
Bybit states it (contracts for inverse symbols, base units for linear ones). Columns after
foreignNotional (newer files add some) are ignored. Venue `bybit`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recorder.importers.base import CsvLayout, FileReader, pair_codes, side_codes
from recorder.importers.blocks import BUY, SELL, Block, PairTable
from recorder.importers.config import ImportConfig
from recorder.importers.inputs import InputFile

__all__ = ["HEADER", "BybitReader", "recognise"]

HEADER = ("timestamp", "symbol", "side", "size", "price", "tickDirection", "trdMatchID",
          "grossValue", "homeNotional", "foreignNotional")
_TYPES = {"timestamp": pa.float64(), "symbol": pa.string(), "side": pa.string(),
          "size": pa.float64(), "price": pa.float64(), "trdMatchID": pa.string()}
_SIDES = pa.array(["Buy", "Sell"])
_CODES = np.array([BUY, SELL], np.int8)
# Seconds since the epoch: 1973 .. 5138, as for the integer formats.
_LOW, _HIGH = 1e8, 1e11


def recognise(inp: InputFile, cfg: ImportConfig, lines: list[str]) -> BybitReader | None:
    names = tuple(f.strip() for f in lines[0].split(","))
    if names[: len(HEADER)] != HEADER or len(set(names)) != len(names):
        return None
    return BybitReader(inp, cfg, CsvLayout(names, _TYPES, header=True))


class BybitReader(FileReader):
    format = "bybit-trades"
    string_ids = True

    def convert(self, batch: pa.RecordBatch, first_line: int, pairs: PairTable) -> Block:
        self.no_nulls(batch, first_line)
        n = batch.num_rows
        price = self.positive(batch, "price", first_line)
        size = self.positive(batch, "size", first_line)
        seconds = batch.column("timestamp").to_numpy()
        bad = ~((seconds >= _LOW) & (seconds < _HIGH))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise self.fail(first_line + row, f"timestamp {seconds[row]!r} is not seconds since "
                                              "the epoch")
        # Exact to the µs: at ~1.7e9 s a float64 resolves 0.25 µs, so rounding to µs is exact.
        ts = np.rint(seconds * 1e6).astype(np.int64) * 1_000
        side = side_codes(self, batch.column("side"), first_line, _SIDES, _CODES)
        pair = pair_codes(self, None, batch.column("symbol"), n, pairs, default_venue="bybit")
        return Block(ts=ts, price=price, size=size, side=side, pair=pair,
                     ids=batch.column("trdMatchID"))

