"""What every alert rule shares: a symbol's slice of a batch, candidate hits, the Rule base,
and the exact, batching-independent helpers the rules build on (docs/analysis.md, "Alerts")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from analysis.alerts.config import RuleConfig

__all__ = ["EMPTY_F", "EMPTY_I", "Hits", "Rule", "SymbolSlice", "bucket_runs", "fmt_price",
           "segment_cumsum"]

EMPTY_I = np.empty(0, np.int64)
EMPTY_F = np.empty(0)


@dataclass(frozen=True)
class SymbolSlice:
    """One symbol's rows of a batch (all arrays row-aligned, in seq order)."""

    ts: np.ndarray  # int64 ns
    price: np.ndarray
    size: np.ndarray
    trade_id: np.ndarray | None = None  # int64, meaningful where trade_id_ok
    trade_id_ok: np.ndarray | None = None


@dataclass(frozen=True)
class Hits:
    """Candidate rows (ascending) with their value and threshold; `info` holds per-row extras
    the message needs. The engine's cooldown picks which candidates become alerts."""

    rows: np.ndarray
    value: np.ndarray
    threshold: np.ndarray
    info: tuple[np.ndarray, ...] = ()

    @staticmethod
    def none() -> Hits:
        return Hits(EMPTY_I, EMPTY_F, EMPTY_F)


C = TypeVar("C", bound=RuleConfig)


class Rule(Generic[C]):
    """Base: a rule's config, its per-symbol state, and its candidates per slice."""

    def __init__(self, config: C) -> None:
        self.config = config
        self.name = config.name

    def new_state(self) -> Any:
        raise NotImplementedError

    def evaluate(self, state: Any, s: SymbolSlice) -> Hits:
        raise NotImplementedError

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        raise NotImplementedError


def fmt_price(p: float) -> str:
    return f"{p:.10g}"


def bucket_runs(ts: np.ndarray, width: int) -> np.ndarray:
    """Start rows of the runs of equal `ts // width` in sorted `ts` (starts[0] == 0). Found by
    bisecting the bucket boundaries, not by dividing every row, when buckets are few."""
    first, last = int(ts[0]) // width, int(ts[-1]) // width
    if last - first > len(ts):  # sparse: more boundaries than rows
        bucket = ts // width
        return np.concatenate(([0], np.flatnonzero(bucket[1:] != bucket[:-1]) + 1))
    cuts = np.searchsorted(ts, np.arange(first + 1, last + 1, dtype=np.int64) * width)
    return np.unique(np.concatenate(([0], cuts[cuts < len(ts)])))


def segment_cumsum(x: np.ndarray, starts: np.ndarray, initial: float = 0.0) -> np.ndarray:
    """Running sums of x restarted at each index of `starts` (starts[0] == 0), the first
    segment continuing from `initial`. Each segment is summed left to right exactly as
    np.cumsum would, so a segment's sums do not depend on what else shares the array:
    a bucket split across two batches gets the same sums as one seen whole."""
    n = len(x)
    out = np.empty(n)
    if n == 0:
        return out
    x = x.astype(np.float64, copy=True)
    x[0] = initial + x[0]  # = cumsum([initial, x...])[1] exactly; the rest follows in order
    ends = np.append(starts[1:], n)
    lengths = ends - starts
    long = np.arange(len(starts)) if len(starts) <= 16 else np.flatnonzero(lengths > 64)
    for k in long.tolist():  # few or long: one cumsum each
        np.cumsum(x[starts[k]:ends[k]], out=out[starts[k]:ends[k]])
    if long.size == len(starts):
        return out
    # Many short segments: pad them into rows of a power-of-two width (at most 2x waste)
    # and cumsum along the rows, one 2-D cumsum per width.
    seg = np.repeat(np.arange(len(starts)), lengths)
    col = np.arange(n) - np.repeat(starts, lengths)
    width_class = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    width_class[lengths > 64] = -1
    elem_class = width_class[seg]
    for c in np.unique(width_class[width_class >= 0]).tolist():
        segs = np.flatnonzero(width_class == c)
        rank = np.zeros(len(starts), np.int64)
        rank[segs] = np.arange(segs.size)
        elems = np.flatnonzero(elem_class == c)
        grid = np.zeros((segs.size, 1 << c))
        r, q = rank[seg[elems]], col[elems]
        grid[r, q] = x[elems]
        np.cumsum(grid, axis=1, out=grid)
        out[elems] = grid[r, q]
    return out
