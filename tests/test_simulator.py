from __future__ import annotations

import math

import numpy as np
import pytest

from recorder.config import SimConfig, SymbolParams, parse_symbols
from recorder.simulator import BLOCK_EVENTS, Events, Simulator

FIELDS = Events.__slots__


def _same(a: Events, b: Events) -> bool:
    return len(a) == len(b) and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_identical_events_whatever_the_chunk_size() -> None:
    cfg = SimConfig(seed=11, rate=40, symbols=parse_symbols("BTC-USD,ETH-USD,SOL-USD"))
    total = 3 * BLOCK_EVENTS + 123
    whole = Simulator(cfg).take(total)
    for chunk in (1, 997, BLOCK_EVENTS + 1):
        sim = Simulator(cfg)
        parts = []
        got = 0
        while got < total:
            part = sim.take(min(chunk, total - got))
            parts.append(part)
            got += len(part)
            if chunk == 1 and got >= 3000:  # one-at-a-time over the first blocks is enough
                rest = sim.take(total - got)
                parts.append(rest)
                got += len(rest)
        assert _same(whole, Events.concat(parts)), chunk


def test_time_slicing_gives_the_same_events_as_count_slicing() -> None:
    cfg = SimConfig(seed=5, rate=100, symbols=parse_symbols("BTC-USD,ETH-USD"))
    whole = Simulator(cfg).take(50_000)
    sim = Simulator(cfg)
    parts, t = [], 0
    while sum(map(len, parts)) < 50_000:
        t += 333_000_000
        parts.append(sim.take(10**9, until_ns=t))
        assert len(parts[-1]) == 0 or parts[-1].offset_ns[-1] < t
    joined = Events.concat(parts)
    assert _same(whole, joined.slice(0, 50_000))


def test_seed_changes_everything_and_parameters_are_honoured() -> None:
    a = Simulator(SimConfig(seed=1)).take(10_000)
    b = Simulator(SimConfig(seed=2)).take(10_000)
    assert not np.array_equal(a.price, b.price)


def test_stream_statistics_match_the_model() -> None:
    vol, rate = 0.8, 50.0
    params = SymbolParams(symbol="BTC-USD", start_price=50_000.0, volatility=vol, tick_size=0.01,
                          size_median=0.02, lot_size=0.0001, side_bias=0.2)
    ev = Simulator(SimConfig(seed=3, rate=rate, symbols=(params,))).take(400_000)
    gaps = np.diff(ev.offset_ns) / 1e9
    assert np.mean(gaps) == pytest.approx(1 / rate, rel=0.02)  # exponential inter-arrivals
    assert np.all(gaps > 0)
    assert np.all(ev.offset_ns % 1_000 == 0)  # microsecond grid
    years = (ev.offset_ns[-1] - ev.offset_ns[0]) / 1e9 / (365 * 86400)
    # Realized vol from 1-minute-ish samples of the tick-rounded price.
    step = int(rate * 60)
    logp = np.log(ev.price[::step])
    realized = np.std(np.diff(logp)) * math.sqrt(len(logp) / years)
    assert realized == pytest.approx(vol, rel=0.15)
    assert np.allclose(ev.price, np.round(ev.price / 0.01) * 0.01)  # tick grid
    assert np.median(ev.size) == pytest.approx(0.02, rel=0.05)  # log-normal median
    assert np.all(ev.size >= 0.0001)
    ups = np.diff(ev.price) > 0
    buys = ev.side_index[1:] == 0
    assert buys[ups].mean() > 0.55 > buys[~ups].mean()  # takers push the price their way


def test_multi_symbol_rates_follow_weights_and_stream_is_time_ordered() -> None:
    syms = (SymbolParams(symbol="AAA-USD", start_price=10.0, weight=3.0),
            SymbolParams(symbol="BBB-USD", start_price=20.0, weight=1.0))
    ev = Simulator(SimConfig(seed=9, rate=100, symbols=syms)).take(200_000)
    assert np.all(np.diff(ev.offset_ns) >= 0)
    share = np.mean(ev.symbol_index == 0)
    assert share == pytest.approx(0.75, abs=0.01)
    assert np.all(ev.price[ev.symbol_index == 1] > 5)


def test_jumps_fatten_tails() -> None:
    base = SymbolParams(symbol="BTC-USD", start_price=50_000.0, volatility=0.5)
    jumpy = SymbolParams(symbol="BTC-USD", start_price=50_000.0, volatility=0.5,
                         jump_intensity=2e6, jump_std=0.002)
    r0 = np.diff(np.log(Simulator(SimConfig(seed=1, symbols=(base,))).take(100_000).price))
    r1 = np.diff(np.log(Simulator(SimConfig(seed=1, symbols=(jumpy,))).take(100_000).price))

    def kurtosis(x: np.ndarray) -> float:
        return float(np.mean((x - x.mean()) ** 4) / np.var(x) ** 2)

    assert kurtosis(r1) > 2 * kurtosis(r0)
