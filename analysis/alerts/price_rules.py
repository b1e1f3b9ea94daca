"""Price rules: price_move, zscore and sma_cross (docs/analysis.md, "Alerts")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from analysis import indicators as ind
from analysis.alerts.config import (
    PriceMoveRule,
    SmaCrossRule,
    ZScoreRule,
    format_duration,
)
from analysis.alerts.rule_base import (
    Hits,
    Rule,
    SymbolSlice,
    bucket_runs,
    fmt_price,
)
from recorder.log import iso_ns

__all__ = ["PriceMove", "SmaCross", "ZScore"]

# SMA sums restart every _SMA_BLOCK indices of the symbol's prices (absolute positions, so
# batching cannot move them). Larger blocks cost less per tick in big batches; a small live
# batch recomputes at most one block.
_SMA_BLOCK = 4_096


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
                f"{format_duration(self.config.window_ns)}: {fmt_price(ref_p)} at "
                f"{iso_ns(ref_ts)} -> {fmt_price(s.price[row])}")


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
        running = csum[slow + 1:]
        np.subtract(seg, ref, out=running)
        np.cumsum(running, out=running)
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
        # Rows inside the deadband or still without a slow SMA (NaN) have no side: the
        # crosses are the flips of the side over the other rows, bool arrays throughout.
        definite = above | below
        if definite.all():
            definite_rows, sides = None, above
        else:
            definite_rows = np.flatnonzero(definite)
            if definite_rows.size == 0:
                return Hits.none()
            sides = above[definite_rows]
        flips = np.flatnonzero(sides[1:] != sides[:-1]) + 1
        first_side = 1 if sides[0] else -1
        at = flips if st.side in (0, first_side) else np.concatenate(([0], flips))
        st.side = 1 if sides[-1] else -1
        rows = at if definite_rows is None else definite_rows[at]
        side = np.where(sides[at], 1, -1)
        if rows.size == 0:
            return Hits.none()
        return Hits(rows, fast[rows], slow[rows], (side,))

    def message(self, symbol: str, hits: Hits, k: int, s: SymbolSlice) -> str:
        cfg = self.config
        way = "above" if hits.info[0][k] > 0 else "below"
        return (f"{symbol} SMA({cfg.fast}) {fmt_price(hits.value[k])} crossed {way} "
                f"SMA({cfg.slow}) {fmt_price(hits.threshold[k])}")
