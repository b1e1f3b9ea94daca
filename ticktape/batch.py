"""One `ticks` batch as the Python client hands it over: numpy columns, or Arrow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["Batch", "parse_batch"]


@dataclass(frozen=True)
class Batch:
    """One `ticks` batch: numpy columns (ts in ns since the epoch; sma NaN until N prices)."""

    log: str
    seq: np.ndarray
    ts: np.ndarray
    symbol: list[str]
    price: np.ndarray
    size: np.ndarray
    side: list[str]
    sma: np.ndarray
    trade_id: list[str] | None = None  # real logs: the exchange's trade ids
    venue: list[str] | None = None  # real logs: where each trade happened

    def __len__(self) -> int:
        return len(self.seq)

    def to_arrow(self) -> pa.RecordBatch:
        """The batch as Arrow: seq, ts (timestamp[ns, UTC]), symbol, price, size, side, sma,
        then trade_id and venue when the log carries them."""
        columns = {
            "seq": pa.array(self.seq, pa.int64()),
            "ts": pa.array(self.ts, pa.timestamp("ns", tz="UTC")),
            "symbol": pa.array(self.symbol, pa.string()),
            "price": pa.array(self.price, pa.float64()),
            "size": pa.array(self.size, pa.float64()),
            "side": pa.array(self.side, pa.string()),
            "sma": pa.array(self.sma, pa.float64(), from_pandas=True),
        }
        for name, values in (("trade_id", self.trade_id), ("venue", self.venue)):
            if values is not None:
                columns[name] = pa.array(values, pa.string())
        return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


def parse_batch(data: Any) -> Batch:
    """A `ticks` payload, JSON columns or Arrow IPC bytes, as a Batch."""
    if isinstance(data, bytes | bytearray):
        table = pa.ipc.open_stream(data).read_all()
        col = table.column
        names = table.schema.names
        return Batch((table.schema.metadata or {}).get(b"log", b"").decode(),
                     col("seq").to_numpy(), col("ts").cast(pa.int64()).to_numpy(),
                     col("symbol").to_pylist(), col("price").to_numpy(), col("size").to_numpy(),
                     col("side").to_pylist(), col("sma").to_numpy(),
                     col("trade_id").to_pylist() if "trade_id" in names else None,
                     col("venue").to_pylist() if "venue" in names else None)
    return Batch(data["log"], np.asarray(data["seq"], np.int64), np.asarray(data["ts"], np.int64),
                 data["symbol"], np.asarray(data["price"], float), np.asarray(data["size"], float),
                 data["side"], np.array(data["sma"], float),  # None -> NaN
                 data.get("trade_id"), data.get("venue"))
