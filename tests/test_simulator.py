from __future__ import annotations

import math
from dataclasses import replace

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


# Each parameter is measured on a seeded sample. Tolerances are Z standard errors of the
# estimate at that sample size: the seeds make every run identical, and a parameter that is
# ignored or misapplied moves the estimate by far more than Z standard errors.
Z = 5.0
YEAR_NS = 365 * 86_400 * 1e9


def _one(seed: int = 1, rate: float = 50.0, **params: float) -> SimConfig:
    start = params.pop("start_price", 50_000.0)
    symbol = SymbolParams(symbol="BTC-USD", start_price=start, **params)
    return SimConfig(seed=seed, rate=rate, symbols=(symbol,))


def test_seed_decides_the_whole_stream() -> None:
    symbols = parse_symbols("BTC-USD,ETH-USD")
    a, again, b = (Simulator(SimConfig(seed=s, symbols=symbols)).take(10_000) for s in (1, 1, 2))
    assert _same(a, again)
    for f in FIELDS:
        assert not np.array_equal(getattr(a, f), getattr(b, f)), f


def test_doubling_the_rate_doubles_the_arrivals() -> None:
    horizon_s = 2_000
    counts = {rate: len(Simulator(_one(rate=rate)).take(10**9, until_ns=horizon_s * 10**9))
              for rate in (50.0, 100.0)}
    for rate, count in counts.items():  # Poisson arrivals: variance = mean
        expected = rate * horizon_s
        assert abs(count - expected) <= Z * math.sqrt(expected), (rate, count)
    # The ratio's standard error by the delta method (independent counts: conservative here).
    ratio_se = 2 * math.sqrt(1 / (50 * horizon_s) + 1 / (100 * horizon_s))
    assert counts[100.0] / counts[50.0] == pytest.approx(2, abs=Z * ratio_se)


def test_time_resolution_sets_the_time_grid() -> None:
    cfg = replace(_one(rate=200.0), time_resolution_ns=1_000_000)
    ev = Simulator(cfg).take(50_000)
    assert np.all(ev.offset_ns % 1_000_000 == 0)
    assert np.diff(ev.offset_ns).min() == 1_000_000  # at 200/s many gaps round to one step


@pytest.mark.parametrize("vol", [0.2, 0.9])
def test_volatility_is_the_std_of_log_returns(vol: float) -> None:
    tick, n = 0.01, 200_000
    ev = Simulator(_one(volatility=vol, tick_size=tick)).take(n)
    dt = np.diff(ev.offset_ns) / YEAR_NS
    r = np.diff(np.log(ev.price))
    # Returns scaled to one year are N(~0, vol^2), plus the variance rounding to the tick
    # grid adds (two independent uniform errors of tick^2/12, relative to the price).
    rounding = np.mean(tick**2 / 6 / ev.price[:-1] ** 2 / dt)
    measured = math.sqrt(max(float(np.mean(r**2 / dt)) - rounding, 0.0))
    assert measured == pytest.approx(vol, abs=Z * vol / math.sqrt(2 * (n - 1)))


def test_drift_is_the_trend_of_log_price() -> None:
    # A long, sparse history: the drift's standard error is vol / sqrt(years).
    vol, drift, n, years = 0.1, 0.15, 200_000, 100.0
    cfg = _one(rate=n / (years * 365 * 86_400), volatility=vol, drift=drift, start_price=100.0)
    ev = Simulator(cfg).take(n)
    span = ev.offset_ns[-1] / YEAR_NS
    measured = math.log(ev.price[-1] / 100.0) / span + vol**2 / 2  # log price drifts at mu - vol^2/2
    assert measured == pytest.approx(drift, abs=Z * vol / math.sqrt(span))


@pytest.mark.parametrize("tick", [0.05, 0.5, 5.0])
def test_prices_start_at_start_price_on_the_tick_grid(tick: float) -> None:
    cfg = _one(tick_size=tick, volatility=2.0)
    ev = Simulator(cfg).take(100_000)
    steps = ev.price / tick
    assert np.all(np.abs(steps - np.rint(steps)) < 1e-6)  # on the grid...
    decimals = cfg.symbols[0].price_decimals  # ...and exact at the grid's decimals
    assert np.all(np.round(ev.price, decimals) == ev.price)
    moves = np.abs(np.diff(np.rint(steps)))
    assert moves[moves > 0].min() == 1  # the grid is this fine, not coarser
    first_sd = 2.0 * math.sqrt(int(ev.offset_ns[0]) / YEAR_NS) * 50_000  # one step of the walk
    assert abs(ev.price[0] - 50_000) <= Z * first_sd + tick


def test_size_median_and_sigma_set_the_log_normal_sizes() -> None:
    median, sigma, n = 0.3, 0.8, 200_000
    # A fine lot: rounding moves log sizes by < 1e-4, far below the tolerances.
    ev = Simulator(_one(size_median=median, size_sigma=sigma, lot_size=1e-6)).take(n)
    logs = np.log(ev.size)
    # Standard errors of a normal sample's median and standard deviation.
    assert np.median(logs) == pytest.approx(math.log(median), abs=Z * math.sqrt(math.pi / 2)
                                            * sigma / math.sqrt(n) + 1e-4)
    assert np.std(logs) == pytest.approx(sigma, abs=Z * sigma / math.sqrt(2 * n) + 1e-4)


def test_lot_size_sets_the_size_grid_and_minimum() -> None:
    ev = Simulator(_one(size_median=1.0, lot_size=0.5)).take(50_000)
    lots = ev.size / 0.5
    assert np.all(lots == np.rint(lots)) and ev.size.min() == 0.5
    assert set(np.unique(np.rint(lots) % 2)) == {0.0, 1.0}  # odd lots too: the grid is 0.5


@pytest.mark.parametrize("bias", [0.0, 0.35])
def test_side_bias_sets_how_takers_follow_the_price(bias: float) -> None:
    n = 200_000
    ev = Simulator(_one(side_bias=bias)).take(n)
    up, down = np.diff(ev.price) > 0, np.diff(ev.price) < 0
    buy = ev.side_index[1:] == 0
    # P(buy) = 0.5 + bias * tanh(shock). A move's sign is its shock's (a tick is ~1 % of a
    # typical move here, the drift far less), so buys among up moves exceed 1/2 by
    # bias * E[tanh |Z|], Z standard normal (by quadrature below).
    z = np.linspace(0, 12, 120_001)
    e_tanh = float(np.sum(np.tanh(z) * np.exp(-z**2 / 2)) * (z[1] - z[0]) * math.sqrt(2 / math.pi))
    for mask, sign in ((up, 1), (down, -1)):
        share = buy[mask].mean()
        assert share == pytest.approx(0.5 + sign * bias * e_tanh,
                                      abs=Z * math.sqrt(0.25 / mask.sum())), sign
    assert ev.side_index.max() <= 1  # the simulator never emits "unknown"


def test_jump_intensity_mean_and_std_are_measured_in_the_returns() -> None:
    # Diffusion tiny next to the jumps: every return beyond 1e-4 is a jump.
    intensity, mean, std, n = 4e6, 0.02, 0.005, 400_000
    ev = Simulator(_one(volatility=0.01, jump_intensity=intensity, jump_mean=mean, jump_std=std)
                   ).take(n)
    r = np.diff(np.log(ev.price))
    jumps = r[np.abs(r) > 1e-4]
    expected = intensity * ev.offset_ns[-1] / YEAR_NS  # Poisson count over the span
    assert abs(len(jumps) - expected) <= Z * math.sqrt(expected)
    assert jumps.mean() == pytest.approx(mean, abs=Z * std / math.sqrt(len(jumps)))
    assert jumps.std() == pytest.approx(std, abs=Z * std / math.sqrt(2 * len(jumps)))


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
