"""tardis-trades: tardis.dev's `trades` CSV datasets (docs.tardis.dev, "Downloadable CSV files").

  exchange,symbol,timestamp,local_timestamp,id,side,price,amount      header, usually .csv.gz
`timestamp` is the exchange's time and `local_timestamp` when tardis received the message,
both µs since the epoch (UTC); `local_timestamp` is kept as the log's `recv_ts`. `side` is
already the taker (aggressor) side: buy, sell or unknown. `id` is the exchange's trade id,
empty when the exchange gives none (such rows are never de-duplicated). The venue is the
`exchange` column (e.g. binance-futures), the symbol the exchange's own, normalized.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recorder.importers.base import CsvLayout, FileReader, pair_codes, side_codes
from recorder.importers.blocks import Block, PairTable
from recorder.importers.config import ImportConfig
from recorder.importers.inputs import InputFile
from recorder.log.schema import SIDES

__all__ = ["HEADER", "TardisReader", "recognise"]

HEADER = ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount")
_TYPES = {"exchange": pa.string(), "symbol": pa.string(), "timestamp": pa.int64(),
          "local_timestamp": pa.int64(), "id": pa.string(), "side": pa.string(),
          "price": pa.float64(), "amount": pa.float64()}
_SIDES = pa.array(list(SIDES))


def recognise(inp: InputFile, cfg: ImportConfig, lines: list[str]) -> TardisReader | None:
    if tuple(f.strip() for f in lines[0].split(",")) != HEADER:
        return None
    return TardisReader(inp, cfg, CsvLayout(HEADER, _TYPES, header=True))


class TardisReader(FileReader):
    format = "tardis-trades"
    string_ids = True

    def convert(self, batch: pa.RecordBatch, first_line: int, pairs: PairTable) -> Block:
        self.no_nulls(batch, first_line)
        n = batch.num_rows
        price = self.positive(batch, "price", first_line)
        size = self.positive(batch, "amount", first_line)
        ts = self.epoch_ints(batch.column("timestamp").to_numpy(), "us", "timestamp", first_line)
        recv = self.epoch_ints(batch.column("local_timestamp").to_numpy(), "us",
                               "local_timestamp", first_line)
        side = side_codes(self, batch.column("side"), first_line, _SIDES,
                          np.arange(len(SIDES), dtype=np.int8))
        ids = batch.column("id")
        ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
        pair = pair_codes(self, batch.column("exchange"), batch.column("symbol"), n, pairs)
        return Block(ts=ts, price=price, size=size, side=side, pair=pair, ids=ids, recv=recv)
