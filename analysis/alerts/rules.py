"""The alert rules: one small class per rule, pure numpy over one symbol's slice of a batch.

Each rule keeps a small per-symbol state (`new_state`) and turns a slice into candidate rows
(`evaluate`); the engine applies the cooldown and builds the alerts. Everything is in event
time and exactly independent of where batches are cut: a rule only compares values that are
computed from the same inputs in the same order whatever the batching (raw prices and
timestamps, sequential sums restarted at fixed points). Formulas: docs/analysis.md, "Alerts".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analysis import indicators as ind
from analysis.alerts.config import (
    NS,
    PriceMoveRule,
    RuleConfig,
    SilenceRule,
    SmaCrossRule,
    TradeIdGapRule,
    VolumeSpikeRule,
    ZScoreRule,
    format_duration,
)
from recorder.log import iso_ns

__all__ = ["RULES", "Hits", "Rule", "SymbolSlice", "bucket_runs", "make_rule", "segment_cumsum"]

_EMPTY_I = np.empty(0, np.int64)
_EMPTY_F = np.empty(0)
# SMA sums restart every _SMA_BLOCK indices of the symbol's prices (absolute positions, so
# batching cannot move them). Larger blocks cost less per tick in big batches; a small live
# batch recomputes at most one block.
_SMA_BLOCK = 4_096


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
        return Hits(_EMPTY_I, _EMPTY_F, _EMPTY_F)


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


def _fmt_price(p: float) -> str:
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


# -- price_move ----------------------------------------------------------------------------

@dataclass
class _PriceMoveState:
    ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    price: np.ndarray = field(default_factory=lambda: np.empty(0))


class PriceMove(Rule[PriceMoveRule]):
    """r = p[i] / p[j] - 1, j the oldest trade of the symbol with ts[j] >= ts[i] - window;
    a candidate when |r| >= threshold."""

    def new_state(self) -> _PriceMoveState:
        return _PriceMoveState()

    def evaluate(self, st: _PriceMoveState, s: SymbolSlice) -> Hits:
        w, x = self.config.window_ns, self.config.threshold
        ctx = len(st.ts)
        all_ts = np.concatenate([st.ts, s.ts]) if ctx else s.ts
        all_p = np.concatenate([st.price, s.price]) if ctx else s.price
        hits = Hits.none()
        # Exact filter first: p[j] lies in i's bucket (`window` aligned to the epoch) or the
        # one before, so a run (bucket) whose own extremes are within x of every price of
        # those two buckets holds no alert. Division and subtraction are monotone, so the
        # filter never drops a row the exact test below keeps. Quiet buckets cost nothing.
        starts = bucket_runs(all_ts, w)
        lo = np.minimum.reduceat(all_p, starts)
        hi = np.maximum.reduceat(all_p, starts)
        lo2, hi2 = lo.copy(), hi.copy()
        run_bucket = all_ts[starts] // w
        adjacent = run_bucket[1:] == run_bucket[:-1] + 1
        lo2[1:][adjacent] = np.minimum(lo[1:], lo[:-1])[adjacent]
        hi2[1:][adjacent] = np.maximum(hi[1:], hi[:-1])[adjacent]
        ends = np.append(starts[1:], len(all_ts))
        flagged = np.flatnonzero(((hi / lo2 - 1 >= x) | (lo / hi2 - 1 <= -x)) & (ends > ctx))
        if flagged.size:
            cand = np.concatenate([np.arange(max(int(starts[r]), ctx), int(ends[r]))
                                   for r in flagged.tolist()]) - ctx
            j = np.searchsorted(all_ts, s.ts[cand] - w, side="left")
            ret = s.price[cand] / all_p[j] - 1
            hit = np.abs(ret) >= x
            j = j[hit]
            hits = Hits(cand[hit], ret[hit], np.full(int(hit.sum()), x),
                        (all_p[j], all_ts[j]))
        keep = int(np.searchsorted(all_ts, all_ts[-1] - w, side="left"))
        st.ts, st.price = all_ts[keep:].copy(), all_p[keep:].copy()
        return hits

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        ref_p, ref_ts = hits.info[0][k], int(hits.info[1][k])
        row = hits.rows[k]
        return (f"{symbol} moved {hits.value[k]:+.2%} within "
                f"{format_duration(self.config.window_ns)}: {_fmt_price(ref_p)} at "
                f"{iso_ns(ref_ts)} -> {_fmt_price(s.price[row])}")


# -- zscore --------------------------------------------------------------------------------

@dataclass
class _ZScoreState:
    price: np.ndarray = field(default_factory=lambda: np.empty(0))
    seen: int = 0  # prices of this symbol before the current slice
    refresh: int = -1  # the refresh point whose statistics are cached
    median: float = math.nan
    sigma: float = math.nan


class ZScore(Rule[ZScoreRule]):
    """z = the robust z-score of the symbol's log return r[t] (ind.robust_zscore):
    (r[t] - median) / (1.4826 * MAD) over the `window` returns before the refresh point
    R = floor(t / stride) * stride (return indices count the symbol's prices from 0; NaN
    while R < window). A candidate when |z| > threshold, as the report's anomaly flags."""

    def new_state(self) -> _ZScoreState:
        return _ZScoreState()

    def evaluate(self, st: _ZScoreState, s: SymbolSlice) -> Hits:
        cfg = self.config
        w, stride = cfg.window, cfg.stride
        ctx = len(st.price)
        all_p = np.concatenate([st.price, s.price]) if ctx else s.price
        returns = ind.log_returns(all_p)  # returns[j] has absolute index base + j
        base, seen, n = st.seen - ctx, st.seen, len(s.price)
        # Refresh points used by this slice's rows; statistics of the first one are cached
        # from the previous slice when it already used it (small live batches stay cheap).
        points = np.arange(seen // stride * stride, seen + n, stride)
        median = np.full(len(points), np.nan)
        sigma = np.full(len(points), np.nan)
        todo = points >= w
        if todo.any() and points[0] == st.refresh:
            median[0], sigma[0] = st.median, st.sigma
            todo[0] = False
        if todo.any():
            starts = points[todo] - w - base
            windows = sliding_window_view(returns, w)[starts]  # a copy: sorted in place
            median[todo], sigma[todo] = ind.robust_stats(windows)
        st.refresh, st.median, st.sigma = int(points[-1]), float(median[-1]), float(sigma[-1])
        offset = seen % stride  # rows of the first refresh block already seen
        r = returns[ctx:]
        z = (r - np.repeat(median, stride)[offset: offset + n]) \
            / np.repeat(sigma, stride)[offset: offset + n]
        with np.errstate(invalid="ignore"):
            rows = np.flatnonzero(np.abs(z) > cfg.threshold)
        keep = w + stride + 1  # prices the windows of the next slice can need
        st.price = all_p[-keep:].copy()
        st.seen += n
        if rows.size == 0:
            return Hits.none()
        return Hits(rows, z[rows], np.full(rows.size, cfg.threshold), (r[rows],))

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        cfg = self.config
        return (f"{symbol} return {hits.info[0][k]:+.4%} has robust z-score "
                f"{hits.value[k]:+.1f} (|z| > {cfg.threshold:g} over {cfg.window} returns)")


# -- volume_spike --------------------------------------------------------------------------

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


@dataclass
class _VolumeState:
    first_ts: int | None = None  # the symbol's first trade
    bucket: int | None = None  # the current (open) bucket
    volume: float = 0.0  # its running volume
    hist_bucket: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    hist_volume: np.ndarray = field(default_factory=lambda: np.empty(0))  # closed, non-empty


class VolumeSpike(Rule[VolumeSpikeRule]):
    """Buckets of `window` aligned to the epoch. At each trade: v = the bucket's volume so far
    (left-to-right sum), m = the median of the volumes of the `baseline / window` buckets
    before it (empty ones count 0). A candidate when v / m >= factor, provided m > 0 and the
    symbol's first trade is at or before the baseline's start."""

    def new_state(self) -> _VolumeState:
        return _VolumeState()

    def evaluate(self, st: _VolumeState, s: SymbolSlice) -> Hits:
        cfg = self.config
        w, m = cfg.window_ns, cfg.buckets
        if st.first_ts is None:
            st.first_ts = int(s.ts[0])
        starts = bucket_runs(s.ts, w)
        ub = s.ts[starts] // w
        continued = st.bucket is not None and int(ub[0]) == st.bucket
        running = segment_cumsum(s.size, starts, st.volume if continued else 0.0)
        ends = np.append(starts[1:], len(s.ts))
        totals = running[ends - 1]
        hist_b, hist_v = st.hist_bucket, st.hist_volume
        if st.bucket is not None and not continued:  # the open bucket closed between batches
            hist_b = np.append(hist_b, st.bucket)
            hist_v = np.append(hist_v, st.volume)
        all_b = np.concatenate([hist_b, ub])
        all_v = np.concatenate([hist_v, totals])
        # Baseline of bucket k: the non-empty buckets in [ub[k] - m, ub[k]), padded with zeros.
        first = np.searchsorted(all_b, ub - m, side="left")
        count = len(hist_b) + np.arange(len(ub)) - first
        offsets = np.arange(m)
        grid = np.where(offsets[None, :] < count[:, None],
                        all_v[np.minimum(first[:, None] + offsets[None, :], len(all_v) - 1)],
                        0.0)
        grid.sort(axis=1)
        median = grid[:, m // 2] if m % 2 else (grid[:, m // 2 - 1] + grid[:, m // 2]) / 2
        ok = (median > 0) & ((ub - m) * w >= st.first_ts)
        hits = Hits.none()
        # Running volumes only grow within a bucket: one whose total stays below the
        # factor has no candidate, so only spiking buckets are looked at row by row.
        with np.errstate(divide="ignore", invalid="ignore"):
            spiking = np.flatnonzero(ok & (totals / median >= cfg.factor))
        if spiking.size:
            rows = np.concatenate([np.arange(int(starts[k]), int(ends[k]))
                                   for k in spiking.tolist()])
            per_row = np.repeat(median[spiking], (ends - starts)[spiking])
            ratio = running[rows] / per_row
            hit = ratio >= cfg.factor
            hits = Hits(rows[hit], ratio[hit], np.full(int(hit.sum()), cfg.factor),
                        (running[rows][hit], per_row[hit]))
        st.bucket, st.volume = int(ub[-1]), float(totals[-1])
        keep = all_b[:-1] >= ub[-1] - m
        st.hist_bucket, st.hist_volume = all_b[:-1][keep], all_v[:-1][keep]
        return hits

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        cfg = self.config
        start = int(s.ts[hits.rows[k]]) // cfg.window_ns * cfg.window_ns
        return (f"{symbol} volume {hits.info[0][k]:.6g} in the "
                f"{format_duration(cfg.window_ns)} from {iso_ns(start)} is "
                f"{hits.value[k]:.1f}x the median {hits.info[1][k]:.6g} of the "
                f"{format_duration(cfg.baseline_ns)} before")


# -- sma_cross -----------------------------------------------------------------------------

@dataclass
class _SmaState:
    price: np.ndarray = field(default_factory=lambda: np.empty(0))
    start: int = 0  # absolute index (within the symbol) of price[0]
    seen: int = 0  # prices of this symbol before the current slice
    side: int = 0  # last definite side: 1 fast above slow, -1 below, 0 none yet


def _block_means(prices: np.ndarray, base: int, seen: int, fast: int, slow: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """SMA(fast) and SMA(slow) for absolute indices [seen, base + len(prices)): means of the
    last n prices (NaN before n exist). Sums are differences of one running sum per block
    of _SMA_BLOCK indices, taken relative to the block's first window price and restarted
    at each block (absolute positions), so a value never depends on how batches were cut
    and rounding stays within one block (~1e-14 relative)."""
    end = base + len(prices)
    out_fast, out_slow = np.empty(end - seen), np.empty(end - seen)
    block = seen - seen % _SMA_BLOCK
    while block < end:
        lo = max(0, block - slow + 1)
        stop = min(block + _SMA_BLOCK, end)
        seg = prices[lo - base: stop - base]
        ref = seg[0]
        # csum[slow + k] = sum of seg[:k] - ref; NaN before index 0, so windows reaching
        # before the symbol's first price give NaN.
        csum = np.empty(slow + len(seg) + 1)
        csum[:slow] = np.nan
        csum[slow] = 0.0
        np.cumsum(seg - ref, out=csum[slow + 1:])
        first = max(block, seen)
        a, b = slow + first - lo + 1, slow + stop - lo + 1
        for n, out in ((fast, out_fast), (slow, out_slow)):
            np.subtract(csum[a:b], csum[a - n: b - n], out=out[first - seen: stop - seen])
            out[first - seen: stop - seen] /= n
            out[first - seen: stop - seen] += ref
        block += _SMA_BLOCK
    return out_fast, out_slow


class SmaCross(Rule[SmaCrossRule]):
    """side = +1 where SMA(fast) > SMA(slow) * (1 + deadband), -1 where below
    SMA(slow) * (1 - deadband), else none; a candidate where the side differs from the last
    definite side before it (the first definite side is not a cross)."""

    def new_state(self) -> _SmaState:
        return _SmaState()

    def evaluate(self, st: _SmaState, s: SymbolSlice) -> Hits:
        cfg = self.config
        all_p = np.concatenate([st.price, s.price]) if len(st.price) else s.price
        fast, slow = _block_means(all_p, st.start, st.seen, cfg.fast, cfg.slow)
        end = st.seen + len(s.price)
        next_block = end - end % _SMA_BLOCK
        keep_from = max(0, next_block - cfg.slow + 1)
        st.price = all_p[keep_from - st.start:].copy()
        st.start, st.seen = keep_from, end
        with np.errstate(invalid="ignore"):
            above = fast > slow * (1 + cfg.deadband)
            below = fast < slow * (1 - cfg.deadband)
        if np.count_nonzero(above) + np.count_nonzero(below) == len(above):
            # The usual case: no row inside the deadband, no NaN; a cross is a flip.
            flips = np.flatnonzero(above[1:] != above[:-1]) + 1
            first_side = 1 if above[0] else -1
            rows = flips if st.side in (0, first_side) else np.concatenate(([0], flips))
            side = np.where(above[rows], 1, -1)
            st.side = 1 if above[-1] else -1
        else:
            definite_rows = np.flatnonzero(above | below)
            if definite_rows.size == 0:
                return Hits.none()
            sides = np.where(above[definite_rows], 1, -1)
            before = np.concatenate(([st.side], sides[:-1]))
            st.side = int(sides[-1])
            cross = (before != 0) & (before != sides)
            rows, side = definite_rows[cross], sides[cross]
        if rows.size == 0:
            return Hits.none()
        return Hits(rows, fast[rows], slow[rows], (side,))

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        cfg = self.config
        way = "above" if hits.info[0][k] > 0 else "below"
        return (f"{symbol} SMA({cfg.fast}) {_fmt_price(hits.value[k])} crossed {way} "
                f"SMA({cfg.slow}) {_fmt_price(hits.threshold[k])}")


# -- silence -------------------------------------------------------------------------------

@dataclass
class _SilenceState:
    last_ts: int | None = None


class Silence(Rule[SilenceRule]):
    """gap = ts[i] - ts of the previous trade (of the symbol, or of the log with scope "log");
    a candidate when gap >= min_gap, raised at the trade that ends the silence (offline and
    live alike: a silence is only known when the next trade comes)."""

    def new_state(self) -> _SilenceState:
        return _SilenceState()

    def evaluate(self, st: _SilenceState, s: SymbolSlice) -> Hits:
        ts = s.ts
        prev = np.empty(len(ts), np.int64)
        prev[1:] = ts[:-1]
        prev[0] = ts[0] if st.last_ts is None else st.last_ts
        st.last_ts = int(ts[-1])
        gap = ts - prev
        rows = np.flatnonzero(gap >= self.config.min_gap_ns)
        if rows.size == 0:
            return Hits.none()
        return Hits(rows, gap[rows] / NS, np.full(rows.size, self.config.min_gap_ns / NS),
                    (prev[rows],))

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        where = "" if self.config.scope == "log" else f" in {symbol}"
        resumed = f"; resumed with {symbol}" if self.config.scope == "log" else ""
        return (f"no trade{where} for {hits.value[k]:.3f}s since "
                f"{iso_ns(int(hits.info[0][k]))}{resumed}")


# -- trade_id_gap --------------------------------------------------------------------------

@dataclass
class _TradeIdState:
    last: int | None = None


class TradeIdGap(Rule[TradeIdGapRule]):
    """Over the symbol's numeric trade ids in seq order: missing = id - previous id - 1; a
    candidate when missing >= min_missing. Non-numeric or null ids are skipped; ids that
    repeat or go back are not gaps."""

    def new_state(self) -> _TradeIdState:
        return _TradeIdState()

    def evaluate(self, st: _TradeIdState, s: SymbolSlice) -> Hits:
        if s.trade_id is None or s.trade_id_ok is None:
            return Hits.none()
        if s.trade_id_ok.all():
            rows, ids = np.arange(len(s.trade_id)), s.trade_id
        else:
            rows = np.flatnonzero(s.trade_id_ok)
            if rows.size == 0:
                return Hits.none()
            ids = s.trade_id[rows]
        prev = np.empty_like(ids)
        prev[1:] = ids[:-1]
        prev[0] = ids[0] - 1 if st.last is None else st.last
        st.last = int(ids[-1])
        missing = ids - prev - 1
        hit = np.flatnonzero(missing >= self.config.min_missing)
        if hit.size == 0:
            return Hits.none()
        return Hits(rows[hit], missing[hit].astype(np.float64),
                    np.full(hit.size, float(self.config.min_missing)),
                    (prev[hit], ids[hit]))

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        missing = int(hits.value[k])
        return (f"{symbol} trade_id jumped from {int(hits.info[0][k])} to "
                f"{int(hits.info[1][k])}: {missing} id{'s' if missing != 1 else ''} missing")


RULES: dict[str, type[Rule[Any]]] = {
    "price_move": PriceMove, "zscore": ZScore, "volume_spike": VolumeSpike,
    "sma_cross": SmaCross, "silence": Silence, "trade_id_gap": TradeIdGap,
}


def make_rule(config: RuleConfig) -> Rule[Any]:
    return RULES[config.name](config)
