"""One streaming pass over a log: content hash, per-symbol statistics, bars and anomalies."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from analysis import indicators as ind

__all__ = ["BarBuilder", "ContentHash", "SymbolSummary"]


class ContentHash:
    """SHA-256 over the events' values (seq, ts, symbol, price, size, side), independent of how
    the log is split into segments or batches: each column is hashed as one byte stream."""

    COLUMNS = ("seq", "ts", "symbol", "price", "size", "side")

    def __init__(self) -> None:
        self._h = {name: hashlib.sha256() for name in self.COLUMNS}
        self._lengths = {name: hashlib.sha256() for name in ("symbol", "side")}

    def update(self, batch: pa.RecordBatch) -> None:
        for name in self.COLUMNS:
            col = batch.column(name)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.int64())
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or \
                    pa.types.is_dictionary(col.type):
                col = col.cast(pa.string()) if pa.types.is_dictionary(col.type) else col
                offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[
                    col.offset: col.offset + len(col) + 1]
                data = col.buffers()[2]
                self._h[name].update(memoryview(data)[offsets[0]:offsets[-1]] if data else b"")
                self._lengths[name].update(np.diff(offsets).astype("<i4").tobytes())
            else:
                values = col.to_numpy()
                self._h[name].update(values.astype(values.dtype.newbyteorder("<"),
                                                   copy=False).tobytes())

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for name in self.COLUMNS:
            total.update(self._h[name].digest())
        for name in ("symbol", "side"):
            total.update(self._lengths[name].digest())
        return total.hexdigest()


@dataclass
class SymbolSummary:
    """Running statistics of one symbol."""

    symbol: str
    events: int = 0
    first_ts: int = 0
    last_ts: int = 0
    open: float = math.nan
    high: float = -math.inf
    low: float = math.inf
    close: float = math.nan
    pv: float = 0.0
    volume: float = 0.0
    sum_r2: float = 0.0
    max_drawdown: float = 0.0
    peak: float = -math.inf
    anomalies: int = 0

    def update(self, ts: np.ndarray, price: np.ndarray, size: np.ndarray,
               returns: np.ndarray, anomaly: np.ndarray | None) -> None:
        if len(price) == 0:
            return
        if self.events == 0:
            self.first_ts, self.open = int(ts[0]), float(price[0])
        self.events += len(price)
        self.last_ts, self.close = int(ts[-1]), float(price[-1])
        self.high = max(self.high, float(price.max()))
        self.low = min(self.low, float(price.min()))
        self.pv += float(np.dot(price, size))
        self.volume += float(size.sum())
        self.sum_r2 += float(np.nansum(np.square(returns)))
        dd = ind.drawdown(price, None if self.peak == -math.inf else self.peak)
        self.max_drawdown = min(self.max_drawdown, float(dd.min()))
        self.peak = max(self.peak, float(price.max()))
        if anomaly is not None:
            self.anomalies += int(anomaly.sum())

    def to_json(self) -> dict[str, Any]:
        span_s = (self.last_ts - self.first_ts) / 1e9
        years = span_s / (365.0 * 86_400.0)
        vol = math.sqrt(self.sum_r2 / years) if years > 0 else None
        return {
            "symbol": self.symbol, "events": self.events,
            "first_ts_ns": self.first_ts, "last_ts_ns": self.last_ts, "span_s": span_s,
            "open": self.open, "high": self.high, "low": self.low, "close": self.close,
            "return": self.close / self.open - 1.0 if self.events else None,
            "volatility_annualized": vol,
            "vwap": self.pv / self.volume if self.volume else None,
            "volume": self.volume, "max_drawdown": self.max_drawdown,
            "anomalies": self.anomalies,
        }


@dataclass
class BarBuilder:
    """OHLCV bars of one symbol over a stream: bars of consecutive batches are merged."""

    interval_ns: int
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def update(self, ts: np.ndarray, price: np.ndarray, size: np.ndarray) -> None:
        if len(ts):
            self.parts.append(ind.ohlcv(ts, price, size, self.interval_ns))

    def bars(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return ind.ohlcv(np.empty(0, np.int64), np.empty(0), np.empty(0), self.interval_ns)
        cat = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        first = np.flatnonzero(np.r_[True, cat["start"][1:] != cat["start"][:-1]])
        last = np.r_[first[1:] - 1, len(cat["start"]) - 1]
        volume = np.add.reduceat(cat["volume"], first)
        return {
            "start": cat["start"][first], "open": cat["open"][first],
            "high": np.maximum.reduceat(cat["high"], first),
            "low": np.minimum.reduceat(cat["low"], first), "close": cat["close"][last],
            "volume": volume, "trades": np.add.reduceat(cat["trades"], first),
            "vwap": np.add.reduceat(cat["vwap"] * cat["volume"], first) / volume,
        }
