"""binance-trades and binance-aggtrades: Binance's public data dumps (data.binance.vision).

Layouts, as published (github.com/binance/binance-public-data, README "Trades"/"AggTrades"):
  spot trades         id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch        no header
  USD-M trades        id,price,qty,quote_qty,time,is_buyer_maker                 header since 2022
  COIN-M trades       id,price,qty,base_qty,time,is_buyer_maker                  header since 2022
  spot aggTrades      agg_trade_id,price,quantity,first_trade_id,last_trade_id,
                      transact_time,is_buyer_maker,is_best_match                 no header
  futures aggTrades   agg_trade_id,price,quantity,first_trade_id,last_trade_id,
                      transact_time,is_buyer_maker                               header since 2022
Times are ms since the epoch, except spot from 2025-01-01 on (µs): judged per file from the
first row's magnitude. `isBuyerMaker=true` means the buyer's order rested, so the taker SOLD.
The files do not name their symbol: it comes from the file name (BTCUSDT-trades-2025-01-01.zip)
or --symbol. Trade ids are integers; aggTrades use the aggregate trade id.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from recorder.importers.base import CsvLayout, FileReader, unit_from_magnitude
from recorder.importers.blocks import BUY, SELL, Block, PairTable
from recorder.importers.config import ImportConfig
from recorder.importers.errors import ImportInputError
from recorder.importers.inputs import InputFile
from recorder.importers.symbols import check_symbol, normalize_symbol

__all__ = ["BinanceReader", "recognise"]

# (format, variant, column names as we name them, header names as Binance spells them)
_LAYOUTS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("binance-trades", "spot", ("id", "price", "qty", "quote_qty", "time", "buyer_maker", "best"),
     "id,price,qty,quoteqty,time,isbuyermaker,isbestmatch"),
    ("binance-trades", "usdm", ("id", "price", "qty", "quote_qty", "time", "buyer_maker"),
     "id,price,qty,quote_qty,time,is_buyer_maker"),
    ("binance-trades", "coinm", ("id", "price", "qty", "base_qty", "time", "buyer_maker"),
     "id,price,qty,base_qty,time,is_buyer_maker"),
    ("binance-aggtrades", "spot", ("id", "price", "qty", "first", "last", "time", "buyer_maker",
                                   "best"),
     "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker,"
     "is_best_match"),
    ("binance-aggtrades", "futures", ("id", "price", "qty", "first", "last", "time",
                                      "buyer_maker"),
     "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"),
)
_TYPES = {"id": pa.int64(), "price": pa.float64(), "qty": pa.float64(), "time": pa.int64(),
          "buyer_maker": pa.bool_()}
_NAME_RE = re.compile(r"^(?P<symbol>[A-Z0-9]+(?:_[A-Z0-9]+)?)-(?:trades|aggTrades)-"
                      r"\d{4}-\d{2}(?:-\d{2})?(?:\.|$)")
_INT_RE = re.compile(r"^\d+$")
_NUM_RE = re.compile(r"^\d+(?:\.\d*)?(?:[eE][+-]?\d+)?$")
_BOOL = ("true", "false")


def _is_bool(value: str) -> bool:
    return value.strip().lower() in _BOOL


def _data_layout(fields: list[str]) -> tuple[str, str, tuple[str, ...]] | None:
    """Recognise a headerless file by its first row: field count and where the booleans are."""
    n = len(fields)
    bools = [_is_bool(f) for f in fields]
    numeric = all(bools[i] or _NUM_RE.match(f.strip()) for i, f in enumerate(fields))
    if not numeric or not fields or not _INT_RE.match(fields[0].strip()):
        return None
    if n == 7 and bools[5] and bools[6]:
        return _LAYOUTS[0][:3]
    if n == 6 and bools[5] and not any(bools[:5]):
        return ("binance-trades", "futures", _LAYOUTS[1][2])
    if n == 8 and bools[6] and bools[7] and not any(bools[:6]):
        return _LAYOUTS[3][:3]
    if n == 7 and bools[6] and not any(bools[:6]):
        return _LAYOUTS[4][:3]
    return None


def recognise(inp: InputFile, cfg: ImportConfig, lines: list[str]) -> BinanceReader | None:
    """A reader if the first line is a Binance header or a Binance data row."""
    fields = [f.strip() for f in lines[0].split(",")]
    header = ",".join(f.lower() for f in fields)
    for fmt, variant, names, spelled in _LAYOUTS:
        if header == spelled:
            data = lines[1].split(",") if len(lines) > 1 else None
            return BinanceReader(inp, cfg, fmt, variant, CsvLayout(names, _TYPES, header=True),
                                 data)
    found = _data_layout(fields)
    if found is None:
        return None
    fmt, variant, names = found
    return BinanceReader(inp, cfg, fmt, variant, CsvLayout(names, _TYPES), fields)


class BinanceReader(FileReader):
    string_ids = False

    def __init__(self, inp: InputFile, cfg: ImportConfig, fmt: str, variant: str,
                 layout: CsvLayout, first_row: list[str] | None) -> None:
        super().__init__(inp, cfg, layout)
        self.format = fmt
        self._variant = variant
        self.native = self._native_symbol()
        self.symbol = cfg.symbol or check_symbol(normalize_symbol(self.native), str(inp.path))
        self.venue = cfg.venue or self._default_venue()
        # The unit of the whole file, from its first row (spot switched to µs on 2025-01-01).
        self.unit = "ms"
        if first_row is not None:
            value = first_row[layout.names.index("time")].strip()
            unit = unit_from_magnitude(int(value)) if _INT_RE.match(value) else None
            if unit is None:
                raise self.fail(2 if layout.header else 1,
                                f"time {value!r} is neither milliseconds nor microseconds "
                                "since the epoch")
            self.unit = unit

    @property
    def variant(self) -> str:
        return self._variant

    def _native_symbol(self) -> str:
        if self.cfg.symbol is not None:
            return self.cfg.symbol.replace("-", "")
        for name in (self.inp.path.name, self.inp.name):
            match = _NAME_RE.match(name)
            if match:
                return match.group("symbol")
        raise ImportInputError(
            f"{self.inp.path}: Binance dumps do not contain their symbol; name the file as "
            "Binance does (e.g. BTCUSDT-trades-2025-01-01.zip) or pass --symbol")

    def _default_venue(self) -> str:
        if self._variant == "spot":
            return "binance"
        # COIN-M (delivery) symbols are XXXUSD_PERP or XXXUSD_<expiry>.
        if self._variant == "coinm" or re.search(r"USD_", self.native):
            return "binance-delivery"
        return "binance-futures"

    def convert(self, batch: pa.RecordBatch, first_line: int, pairs: PairTable) -> Block:
        self.no_nulls(batch, first_line)
        n = batch.num_rows
        price = self.positive(batch, "price", first_line)
        size = self.positive(batch, "qty", first_line)
        ts = self.epoch_ints(batch.column("time").to_numpy(), self.unit, "time", first_line)
        maker = batch.column("buyer_maker").to_numpy(zero_copy_only=False)
        code = pairs.code(self.venue, self.symbol, self.native)
        return Block(ts=ts, price=price, size=size, side=np.where(maker, SELL, BUY),
                     pair=np.full(n, code, np.int32), key=batch.column("id").to_numpy())
