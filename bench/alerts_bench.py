"""Alerts: rule evaluation ns/tick, each rule alone and all defaults, beside the streaming SMA.

Input: a synthetic two-symbol stream (BTC-USD, ETH-USD at 20 ticks/s, GBM prices with a few
jumps, log-normal sizes with bursts, sequential trade ids with a few gaps, one silence), held
in memory as log-shaped RecordBatches of 262,144 rows (what `ticktape alerts` reads: symbol
dictionary-encoded, as sealed segments hand it over), so the figures are rule evaluation
alone, not Parquet decoding; one line repeats the defaults with symbols as plain strings.
The baseline is the analysis SMA (`StreamingIndicators`, SMA(50): the per-symbol split plus
one SMA) over the same batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.alerts import AlertConfig, AlertEngine
from analysis.streaming import IndicatorSpec, StreamingIndicators, symbol_codes
from bench.common import Report, header, timed
from recorder.log import SCHEMA, make_batch

N = 10_000_000
BATCH = 262_144
SMALL_BATCH = 1_000
TARGET = "<= 50 ns/tick (all defaults)"


def synthetic_batches(n: int, rows: int, seed: int = 1,
                      dictionary_symbols: bool = True) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    ts = 1_704_067_200 * 10**9 + np.cumsum(rng.exponential(50e6, n)).astype(np.int64)
    ts[n // 2:] += 120 * 10**9  # one two-minute silence
    is_eth = rng.random(n) < 0.375
    shocks = rng.normal(0, 1.1e-5, n) + np.where(rng.random(n) < 2e-6, rng.normal(0, 0.01, n), 0)
    price = np.empty(n)
    size = rng.lognormal(np.log(0.01), 1.2, n)
    burst = (ts // (60 * 10**9)) % 997 == 0  # a volume burst about every 16 hours
    size[burst] *= 20
    ids = np.empty(n, np.int64)
    for flag, start in ((False, 65_000.0), (True, 3_400.0)):
        mask = is_eth == flag
        price[mask] = np.round(start * np.exp(np.cumsum(shocks[mask])), 2)
        steps = np.where(rng.random(int(mask.sum())) < 1e-5, 3, 1)
        ids[mask] = 1_000_000 + np.cumsum(steps)
    symbol = np.where(is_eth, "ETH-USD", "BTC-USD")
    side = np.where(rng.random(n) < 0.5, "buy", "sell")
    batches = []
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        base = make_batch(np.arange(lo, hi, dtype=np.int64), ts[lo:hi],
                          pa.array(symbol[lo:hi]), price[lo:hi], size[lo:hi],
                          pa.array(side[lo:hi]))
        columns = [*base.columns, pa.array(ids[lo:hi].astype(str))]
        if dictionary_symbols:  # as sealed segments hand it to `ticktape alerts`
            columns[2] = pc.dictionary_encode(columns[2])
        batches.append(pa.RecordBatch.from_arrays(columns, names=[*SCHEMA.names, "trade_id"]))
    return batches


def _alerts(config: AlertConfig, batches: list[pa.RecordBatch]) -> int:
    engine = AlertEngine(config, "bench")
    return sum(len(engine.update(b)) for b in batches)


def _sma(batches: list[pa.RecordBatch]) -> None:
    engine = StreamingIndicators(IndicatorSpec(sma=(50,)))
    for b in batches:
        symbol = b.column("symbol")
        engine.update(symbol, b.column("ts").cast(pa.int64()).to_numpy(),
                      b.column("price").to_numpy(), codes=symbol_codes(symbol))


def _best(fn: Callable[[], object], repeat: int) -> float:
    return min(timed(fn)[0] for _ in range(repeat))


def only(name: str) -> AlertConfig:
    defaults = AlertConfig()
    return AlertConfig(rules=tuple(r if r.name == name else replace(r, enabled=False)
                                   for r in defaults.rules))


def run(quick: bool = False) -> Report:
    n = 1_000_000 if quick else N
    repeat = 3 if quick else 2
    rep = header(f"Alerts (rule evaluation over {n:,} ticks, 2 symbols, batches of {BATCH:,})")
    batches = synthetic_batches(n, BATCH)
    per_tick = 1e9 / n
    sma = _best(lambda: _sma(batches), repeat) * per_tick
    defaults = AlertConfig()
    for rule in defaults.rules:
        seconds = _best(lambda rule=rule: _alerts(only(rule.name), batches), repeat)
        rep.add(f"{rule.name} alone", seconds * per_tick, "ns/tick", baseline=sma,
                baseline_name="streaming SMA(50), same batches", higher_is_better=False)
    seconds = _best(lambda: _alerts(defaults, batches), repeat)
    rep.add("all default rules together", seconds * per_tick, "ns/tick", baseline=sma,
            baseline_name="streaming SMA(50), same batches", higher_is_better=False,
            target=TARGET)
    # The journal's tail (and any reader not asking for dictionary symbols) hands symbols
    # over as strings: the split by symbol then hashes every row, in both measurements.
    strings = [b.set_column(2, "symbol", b.column(2).cast(pa.string())) for b in batches]
    sma_strings = _best(lambda: _sma(strings), repeat) * per_tick
    seconds = _best(lambda: _alerts(defaults, strings), repeat)
    rep.add("all defaults, symbols as plain strings", seconds * per_tick, "ns/tick",
            baseline=sma_strings, baseline_name="streaming SMA(50), same batches",
            higher_is_better=False)
    # A live stream feeds small batches: the fixed cost per batch shows here.
    m = min(n, 200_000 if quick else 1_000_000)
    small = synthetic_batches(m, SMALL_BATCH)
    sma_small = _best(lambda: _sma(small), repeat) * 1e9 / m
    seconds = _best(lambda: _alerts(defaults, small), repeat)
    rep.add(f"all defaults, {SMALL_BATCH:,}-row batches ({m:,} ticks)", seconds * 1e9 / m,
            "ns/tick", baseline=sma_small, baseline_name="streaming SMA(50), same batches",
            higher_is_better=False)
    rep.save()
    return rep
