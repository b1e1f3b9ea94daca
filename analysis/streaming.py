"""Indicators over a stream of batches, per symbol, with state carried across batch edges.

`analyze`, `report` and the replayer's live SMA all run through `StreamingIndicators`, so a
value never depends on where a batch boundary fell (beyond float rounding, < 1e-12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis import indicators as ind
from analysis.errors import AnalysisError

__all__ = ["IndicatorSpec", "StreamingIndicators", "symbol_codes"]


@dataclass(frozen=True, kw_only=True)
class IndicatorSpec:
    """Which indicators to compute; column names follow `ticktape analyze` (sma_5, ...)."""

    sma: tuple[int, ...] = (5,)
    ema: tuple[int, ...] = ()
    vwap: bool = False
    rolling_vwap: tuple[int, ...] = ()
    returns: bool = False
    volatility: tuple[int, ...] = ()  # windows in returns
    drawdown: bool = False
    anomaly_window: int = 0  # 0: off
    anomaly_threshold: float = 6.0
    anomaly_stride: int = 1

    def __post_init__(self) -> None:
        for name in ("sma", "ema", "rolling_vwap", "volatility"):
            for n in getattr(self, name):
                if not isinstance(n, int) or not 1 <= n <= 1_000_000:
                    raise AnalysisError(f"--{name.replace('_', '-')} window {n!r} must be an "
                                        "integer within [1, 1000000]")
        if self.anomaly_window and not 2 <= self.anomaly_window <= 100_000:
            raise AnalysisError("--anomaly-window must be within [2, 100000]")
        if not self.anomaly_threshold > 0:
            raise AnalysisError("--anomaly-threshold must be > 0")
        if self.anomaly_stride < 1:
            raise AnalysisError("anomaly stride must be >= 1")

    @property
    def lookback(self) -> int:
        """Past rows per symbol the window indicators need to continue a stream exactly."""
        need = [n - 1 for n in (*self.sma, *self.rolling_vwap)]
        need += [n + 1 for n in self.volatility]
        if self.anomaly_window:
            need.append(self.anomaly_window + self.anomaly_stride + 1)
        return max(need, default=0)

    def columns(self) -> list[str]:
        cols = [f"sma_{n}" for n in self.sma] + [f"ema_{n}" for n in self.ema]
        cols += ["vwap"] if self.vwap else []
        cols += [f"rvwap_{n}" for n in self.rolling_vwap]
        cols += ["log_return"] if self.returns else []
        cols += [f"vol_{n}" for n in self.volatility]
        cols += ["drawdown"] if self.drawdown else []
        cols += ["anomaly_z", "anomaly"] if self.anomaly_window else []
        return cols


@dataclass
class _SymbolState:
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    price: np.ndarray = field(default_factory=lambda: np.empty(0))
    size: np.ndarray = field(default_factory=lambda: np.empty(0))
    seen: int = 0  # rows of this symbol before the current batch
    ema: dict[int, float] = field(default_factory=dict)
    vwap: tuple[float, float] = (0.0, 0.0)
    peak: float | None = None


def symbol_codes(symbol: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Small integer codes for a symbol column, and the names they stand for: each name
    once, each used by some row. A dictionary-typed column (`Log.iter_batches(...,
    dictionary_symbols=True)`) costs a pass over its indices instead of a hash per row."""
    if isinstance(symbol, pa.ChunkedArray) and symbol.num_chunks == 1:
        symbol = symbol.chunk(0)
    if isinstance(symbol, pa.DictionaryArray) and symbol.null_count == 0:
        return _dictionary_codes(symbol)
    encoded = pc.dictionary_encode(symbol)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return (encoded.indices.to_numpy(zero_copy_only=False),
            encoded.dictionary.to_pylist())


def _dictionary_codes(symbol: pa.DictionaryArray) -> tuple[np.ndarray, list[str]]:
    """A Parquet dictionary can hold names no row of this batch uses (it is the row
    group's); those are dropped and the codes renumbered, so no rule sees an empty slice."""
    indices = symbol.indices.to_numpy(zero_copy_only=False)
    dictionary = symbol.dictionary.to_pylist()
    used = np.flatnonzero(np.bincount(indices, minlength=len(dictionary)))
    names = [dictionary[i] for i in used.tolist()]
    if len(set(names)) != len(names):  # a dictionary repeating a name: let Arrow merge them
        return symbol_codes(symbol.cast(pa.string()))
    if len(used) == len(dictionary):
        return indices, names
    renumber = np.zeros(len(dictionary), dtype=indices.dtype)
    renumber[used] = np.arange(len(used), dtype=indices.dtype)
    return renumber[indices], names


class StreamingIndicators:
    """Feed batches in seq order; get each batch's indicator columns back, row-aligned."""

    def __init__(self, spec: IndicatorSpec) -> None:
        self.spec = spec
        self._states: dict[str, _SymbolState] = {}

    def update(self, symbol: pa.Array, ts_ns: np.ndarray, price: np.ndarray,
               size: np.ndarray | None = None, *,
               codes: tuple[np.ndarray, list[str]] | None = None) -> dict[str, np.ndarray]:
        """`codes`: the batch's `symbol_codes`, when the caller has them already."""
        rows = len(price)
        out = {name: np.full(rows, np.nan) for name in self.spec.columns()}
        if "anomaly" in out:
            out["anomaly"] = np.zeros(rows, dtype=bool)
        if rows == 0:
            return out
        if size is None:
            size = np.ones(rows)
        symbol_index, names = codes if codes is not None else symbol_codes(symbol)
        for code, name in enumerate(names):
            idx = slice(None) if len(names) == 1 else np.flatnonzero(symbol_index == code)
            state = self._states.setdefault(name, _SymbolState())
            self._one_symbol(state, ts_ns[idx], price[idx], size[idx], out, idx)
        return out

    def _one_symbol(self, st: _SymbolState, ts: np.ndarray, price: np.ndarray,
                    size: np.ndarray, out: dict[str, np.ndarray], idx: slice | np.ndarray
                    ) -> None:
        spec = self.spec
        ctx = len(st.price)
        all_price = np.concatenate([st.price, price]) if ctx else price
        all_size = np.concatenate([st.size, size]) if ctx else size
        all_ts = np.concatenate([st.ts, ts]) if ctx else ts
        for n in spec.sma:
            out[f"sma_{n}"][idx] = ind.sma(all_price, n)[ctx:]
        for n in spec.ema:
            values = ind.ema(price, n, previous=st.ema.get(n))
            out[f"ema_{n}"][idx] = values
            st.ema[n] = float(values[-1])
        if spec.vwap:
            values, st.vwap = ind.vwap(price, size, st.vwap)
            out["vwap"][idx] = values
        for n in spec.rolling_vwap:
            out[f"rvwap_{n}"][idx] = ind.rolling_vwap(all_price, all_size, n)[ctx:]
        if spec.returns or spec.volatility or spec.anomaly_window:
            returns = ind.log_returns(all_price)
            if spec.returns:
                out["log_return"][idx] = returns[ctx:]
            for n in spec.volatility:
                out[f"vol_{n}"][idx] = ind.realized_volatility(returns, all_ts, n)[ctx:]
            if spec.anomaly_window:
                phase = st.seen - ctx  # absolute index of all_price[0] within the symbol
                z = ind.robust_zscore(returns, spec.anomaly_window, spec.anomaly_stride,
                                      phase)[ctx:]
                out["anomaly_z"][idx] = z
                out["anomaly"][idx] = np.abs(z) > spec.anomaly_threshold
        if spec.drawdown:
            out["drawdown"][idx] = ind.drawdown(price, st.peak)
            st.peak = max(float(np.max(price)), st.peak or 0.0)
        keep = spec.lookback
        st.seen += len(price)
        if keep:
            st.price, st.size, st.ts = all_price[-keep:], all_size[-keep:], all_ts[-keep:]
