"""Each indicator against an independent pandas (or exact) computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import indicators as ind

RNG = np.random.default_rng(2024)
PRICE = 65_000 * np.exp(np.cumsum(RNG.normal(0, 2e-4, 50_000)))
SIZE = RNG.lognormal(-5, 1, 50_000)
TS = 1_704_067_200 * 10**9 + np.cumsum(RNG.exponential(5e7, 50_000)).astype(np.int64)


def _close(ours: np.ndarray, theirs: np.ndarray, rel: float = 1e-9) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    assert np.max(np.abs(ours[ok] - theirs[ok]) / np.abs(theirs[ok])) <= rel


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 200, 5_000])
def test_sma_matches_pandas(n: int) -> None:
    _close(ind.sma(PRICE, n), pd.Series(PRICE).rolling(n).mean().to_numpy(), 1e-12)


def test_sma_stays_exact_over_millions_of_prices() -> None:
    """A plain cumsum drifts by ~1e-9 relative here; ours must stay near machine precision."""
    price = 65_000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 1e-4, 3_000_000)))
    for n in (5, 200):
        ours = ind.sma(price, n)
        for i in (n - 1, 1_234_567, len(price) - 1):
            exact = math.fsum(price[i - n + 1: i + 1]) / n
            assert abs(ours[i] - exact) / exact < 1e-13


def test_window_sum_nan_only_spoils_its_windows() -> None:
    x = np.arange(100_000, dtype=float)
    x[50_000] = np.nan
    out = ind.window_sum(x, 100)
    assert np.isnan(out[50_000:50_100]).all()
    assert not np.isnan(out[99:50_000]).any() and not np.isnan(out[50_100:]).any()
    assert out[99] == sum(range(100))


@pytest.mark.parametrize("span", [3, 20, 500])
def test_ema_matches_pandas(span: int) -> None:
    theirs = pd.Series(PRICE).ewm(span=span, adjust=False).mean().to_numpy()
    _close(ind.ema(PRICE, span), theirs, 1e-12)
    half = ind.ema(PRICE[:20_000], span)
    _close(np.r_[half, ind.ema(PRICE[20_000:], span, previous=half[-1])], theirs, 1e-12)


def test_vwap_matches_pandas() -> None:
    theirs = (pd.Series(PRICE * SIZE).cumsum() / pd.Series(SIZE).cumsum()).to_numpy()
    ours, carry = ind.vwap(PRICE[:100], SIZE[:100])
    rest, _ = ind.vwap(PRICE[100:], SIZE[100:], carry)
    _close(np.r_[ours, rest], theirs, 1e-12)
    rolling = (pd.Series(PRICE * SIZE).rolling(50).sum() / pd.Series(SIZE).rolling(50).sum())
    _close(ind.rolling_vwap(PRICE, SIZE, 50), rolling.to_numpy(), 1e-10)


def test_returns_volatility_and_drawdown_match_pandas() -> None:
    s = pd.Series(PRICE)
    r = np.log(s).diff()
    _close(ind.log_returns(PRICE), r.to_numpy(), 1e-9)
    years = pd.Series(TS).diff(100) / (365 * 86400 * 1e9)
    vol = np.sqrt((r**2).rolling(100).sum() / years).to_numpy()
    _close(ind.realized_volatility(ind.log_returns(PRICE), TS, 100), vol, 1e-9)
    dd = (s / s.cummax() - 1).to_numpy()
    assert np.max(np.abs(ind.drawdown(PRICE) - dd)) < 1e-15
    assert np.max(np.abs(np.r_[ind.drawdown(PRICE[:10]), ind.drawdown(PRICE[10:],
                                                                       PRICE[:10].max())] - dd)) < 1e-15


def test_robust_zscore_matches_pandas_rolling_median() -> None:
    r = ind.log_returns(PRICE)[1:]
    s = pd.Series(r)
    med = s.rolling(64).median().shift(1)
    mad = s.rolling(64).apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True).shift(1)
    theirs = ((s - med) / (mad * 1.482602218505602)).to_numpy()
    _close(ind.robust_zscore(r, 64), theirs, 1e-9)
    # With a stride, statistics come from the last refresh point, wherever the array starts.
    strided = ind.robust_zscore(r, 64, stride=8)
    t = 64 + 8 * 5 + 3  # refreshed at 64 + 40, used through 64 + 47
    k = t - 64 - 3
    window = r[k:k + 64]
    m = np.median(window)
    expected = (r[t] - m) / (np.median(np.abs(window - m)) * 1.482602218505602)
    assert strided[t] == pytest.approx(expected, rel=1e-12)
    shifted = ind.robust_zscore(r[1000:], 64, stride=8, phase=1000)
    _close(shifted[100:], strided[1100:], 1e-12)


def test_ohlcv_matches_pandas_resample() -> None:
    bars = ind.ohlcv(TS, PRICE, SIZE, 60 * 10**9)
    df = pd.DataFrame({"price": PRICE, "size": SIZE},
                      index=pd.to_datetime(TS, utc=True))
    rs = df.resample("1min")
    theirs = pd.DataFrame({"open": rs["price"].first(), "high": rs["price"].max(),
                           "low": rs["price"].min(), "close": rs["price"].last(),
                           "volume": rs["size"].sum(), "trades": rs["price"].count()}).dropna()
    assert np.array_equal(bars["start"], theirs.index.asi8)
    for col in ("open", "high", "low", "close", "trades"):
        assert np.array_equal(bars[col], theirs[col].to_numpy()), col
    _close(bars["volume"], theirs["volume"].to_numpy(), 1e-12)
    with pytest.raises(ValueError):
        ind.ohlcv(TS, PRICE, SIZE, 0)
