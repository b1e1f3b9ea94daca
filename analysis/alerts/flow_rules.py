"""Flow rules: volume_spike, silence and trade_id_gap (docs/analysis.md, "Alerts")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.alerts.config import (
    NS,
    SilenceRule,
    TradeIdGapRule,
    VolumeSpikeRule,
    format_duration,
)
from analysis.alerts.rule_base import (
    Hits,
    Rule,
    SymbolSlice,
    bucket_runs,
    segment_cumsum,
)
from recorder.log import iso_ns

__all__ = ["Silence", "TradeIdGap", "VolumeSpike"]


# -- volume_spike --------------------------------------------------------------------------

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
