"""Seeded, vectorized trade simulator: per-symbol GBM with jumps, merged into one time-ordered stream.

Chunk invariance is the design constraint: every symbol draws its randomness in fixed blocks of
BLOCK_EVENTS events, each block from its own SeedSequence(seed, spawn_key=(symbol, block)), and
callers slice the merged stream however they like. So `take(1_000_000)` once and `take(1_000)`
a thousand times give identical events, and the fast and real-time recorders agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recorder.config import SimConfig, SymbolParams

__all__ = ["BLOCK_EVENTS", "Events", "Simulator"]

BLOCK_EVENTS = 65_536
SECONDS_PER_YEAR = 365.0 * 86_400.0
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Events:
    """A slice of the simulated stream, as parallel arrays (offsets are ns since the start)."""

    offset_ns: np.ndarray  # int64, non-decreasing
    symbol_index: np.ndarray  # int32, index into SimConfig.symbols
    price: np.ndarray  # float64 on the symbol's tick grid
    size: np.ndarray  # float64 on the symbol's lot grid
    side_index: np.ndarray  # int8, index into recorder.log.schema.SIDES (0 buy, 1 sell)

    def __len__(self) -> int:
        return int(self.offset_ns.shape[0])

    def slice(self, start: int, stop: int) -> Events:
        return Events(self.offset_ns[start:stop], self.symbol_index[start:stop],
                      self.price[start:stop], self.size[start:stop], self.side_index[start:stop])

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        if len(parts) == 1:
            return parts[0]
        return Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in Events.__slots__))


def _round_to_grid(values: np.ndarray, step: float, decimals: int) -> np.ndarray:
    """Nearest multiple of step, never below one step, printed exactly (0.1+0.2 noise removed)."""
    return np.round(np.maximum(np.rint(values / step), 1.0) * step, decimals)


class _SymbolStream:
    """One symbol's events, generated block by block from its own seeded generators."""

    def __init__(self, seed: int, index: int, params: SymbolParams, rate: float,
                 resolution_ns: int) -> None:
        self._seed, self._index, self._p = seed, index, params
        self._resolution = resolution_ns
        self._mean_gap_s = 1.0 / rate
        self._block = 0
        self._last_ns = 0
        self._log_price = math.log(params.start_price)
        self._price_decimals = params.price_decimals
        self._size_decimals = SymbolParams(symbol="X-Y", start_price=1.0,
                                           tick_size=params.lot_size).price_decimals
        self.pending: Events = self._empty()

    def _empty(self) -> Events:
        return Events(np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0),
                      np.empty(0), np.empty(0, np.int8))

    @property
    def horizon_ns(self) -> int:
        """Time of the last generated event: every later event of this symbol is strictly after."""
        return self._last_ns

    def generate_block(self) -> None:
        p, n = self._p, BLOCK_EVENTS
        seq = np.random.SeedSequence(self._seed, spawn_key=(self._index, self._block))
        rng = np.random.Generator(np.random.PCG64(seq))
        # Integer gaps of at least one grid step keep times exact however long the session
        # and make "strictly after the horizon" true, which the merge relies on.
        res = self._resolution
        gaps = np.rint(rng.standard_exponential(n) * (self._mean_gap_s * NS / res))
        np.maximum(gaps, 1, out=gaps)
        gaps = gaps.astype(np.int64) * res
        offsets = self._last_ns + np.cumsum(gaps)
        dt_years = gaps / (SECONDS_PER_YEAR * NS)
        shocks = rng.standard_normal(n)
        log_moves = (p.drift - 0.5 * p.volatility**2) * dt_years + p.volatility * np.sqrt(
            dt_years) * shocks
        if p.jump_intensity > 0:
            jumps = rng.poisson(p.jump_intensity * dt_years)
            log_moves += jumps * p.jump_mean + np.sqrt(jumps) * p.jump_std * rng.standard_normal(n)
        log_prices = self._log_price + np.cumsum(log_moves)
        price = _round_to_grid(np.exp(log_prices), p.tick_size, self._price_decimals)
        # exp(mu + sigma Z): the log-normal, cheaper than Generator.lognormal.
        raw_size = np.exp(math.log(p.size_median) + p.size_sigma * rng.standard_normal(n))
        size = _round_to_grid(raw_size, p.lot_size, self._size_decimals)
        # Buyer-initiated trades tend to lift the price: P(buy) = 0.5 + bias * tanh(shock).
        buy = rng.random(n) < 0.5 + p.side_bias * np.tanh(shocks)
        side = np.where(buy, 0, 1).astype(np.int8)
        block = Events(offsets, np.full(n, self._index, np.int32), price, size, side)
        self.pending = Events.concat([self.pending, block]) if len(self.pending) else block
        self._last_ns = int(offsets[-1])
        self._log_price = float(log_prices[-1])
        self._block += 1

    def pop_until(self, horizon_ns: int) -> Events:
        cut = int(np.searchsorted(self.pending.offset_ns, horizon_ns, side="right"))
        out = self.pending.slice(0, cut)
        self.pending = self.pending.slice(cut, len(self.pending))
        return out


class Simulator:
    """The merged stream of every symbol, ordered by (time, symbol index)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._streams = [
            _SymbolStream(config.seed, i, params, rate, config.time_resolution_ns)
            for i, (params, rate) in enumerate(zip(config.symbols, config.symbol_rates(),
                                                   strict=True))
        ]
        # Ready events as a list of chunks: concatenating on every refill would be quadratic.
        self._ready: list[Events] = []
        self._ready_count = 0
        self.emitted = 0

    def _refill(self) -> None:
        """Move every event up to the common horizon into the ready queue, in global order."""
        for stream in self._streams:
            if len(stream.pending) == 0:
                stream.generate_block()
        horizon = min(s.horizon_ns for s in self._streams)
        parts = [s.pop_until(horizon) for s in self._streams]
        if len(parts) == 1:
            merged = parts[0]
        else:
            merged = Events.concat(parts)
            order = np.lexsort((merged.symbol_index, merged.offset_ns))
            merged = Events(*(getattr(merged, f)[order] for f in Events.__slots__))
        if len(merged):
            self._ready.append(merged)
            self._ready_count += len(merged)

    def _ready_last_ns(self) -> int:
        return int(self._ready[-1].offset_ns[-1])

    def take(self, max_events: int, until_ns: int | None = None) -> Events:
        """The next events: at most max_events, and only those with offset < until_ns if given."""
        while self._ready_count < max_events and (
            until_ns is None or self._ready_count == 0 or self._ready_last_ns() < until_ns
        ):
            self._refill()
        out_parts: list[Events] = []
        wanted = max_events
        while wanted > 0 and self._ready:
            head = self._ready[0]
            count = min(wanted, len(head))
            if until_ns is not None:
                count = min(count, int(np.searchsorted(head.offset_ns, until_ns, side="left")))
            if count == 0:
                break
            out_parts.append(head.slice(0, count))
            if count == len(head):
                self._ready.pop(0)
            else:
                self._ready[0] = head.slice(count, len(head))
            wanted -= count
            if count < len(head) and until_ns is not None:
                break
        self._ready_count -= max_events - wanted
        self.emitted += max_events - wanted
        if not out_parts:
            return self._streams[0]._empty()
        return Events.concat(out_parts)

    def next_offset_ns(self) -> int:
        """Offset of the next event (generates ahead if needed)."""
        while not self._ready:
            self._refill()
        return int(self._ready[0].offset_ns[0])
