"""Alert rules, one by one, against independent loop/pandas computations on seeded synthetic
data built to trigger them (and not to), plus cooldown, batch invariance and the TOML config."""

from __future__ import annotations

import bisect
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from analysis.alerts import (
    Alert,
    AlertConfig,
    AlertConfigError,
    AlertEngine,
    AlertError,
    load_rules,
    parse_rules,
)
from analysis.alerts.config import NS
from analysis.alerts.rules import segment_cumsum
from analysis.streaming import symbol_codes
from recorder.log import SCHEMA, make_batch

T0 = 1_704_067_200 * NS  # 2024-01-01


def make(ts: np.ndarray, price: np.ndarray, size: np.ndarray | None = None,
         symbol: np.ndarray | None = None, trade_id: list[str | None] | None = None
         ) -> pa.RecordBatch:
    n = len(ts)
    sym = symbol if symbol is not None else np.full(n, "BTC-USD")
    base = make_batch(np.arange(n, dtype=np.int64), np.asarray(ts, np.int64), pa.array(sym),
                      np.asarray(price, float), np.ones(n) if size is None else size,
                      pa.array(["buy"] * n))
    if trade_id is None:
        return base
    return pa.RecordBatch.from_arrays([*base.columns, pa.array(trade_id, pa.string())],
                                      names=[*SCHEMA.names, "trade_id"])


def only(name: str, **changes: object) -> AlertConfig:
    rules = []
    for rule in AlertConfig().rules:
        rules.append(replace(rule, **changes) if rule.name == name  # type: ignore[arg-type]
                     else replace(rule, enabled=False))
    return AlertConfig(rules=tuple(rules))


def run(config: AlertConfig, batch: pa.RecordBatch, chunk: int | None = None) -> list[Alert]:
    engine = AlertEngine(config, "test")
    chunk = chunk or batch.num_rows
    return [a for lo in range(0, batch.num_rows, chunk)
            for a in engine.update(batch.slice(lo, chunk))]


def cooldown(candidates: list[tuple[int, int]], window_ns: int) -> list[int]:
    """Reference cooldown: (row, ts) candidates in order -> rows that become alerts."""
    kept, blocked_until = [], None
    for row, ts in candidates:
        if blocked_until is None or ts >= blocked_until:
            kept.append(row)
            blocked_until = ts + window_ns
    return kept


def random_walk(n: int, seed: int, vol: float = 1e-4, gap_ms: float = 50.0
                ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.exponential(gap_ms * 1e6, n)).astype(np.int64)
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, vol, n))), 4)
    return ts, price


# -- price_move ----------------------------------------------------------------------------

def _price_move_reference(ts: np.ndarray, price: np.ndarray, threshold: float,
                          window: int) -> list[tuple[int, int, float]]:
    out = []
    for i in range(len(ts)):
        j = bisect.bisect_left(ts.tolist(), ts[i] - window)
        r = price[i] / price[j] - 1
        if abs(r) >= threshold:
            out.append((i, int(ts[i]), r))
    return out


@pytest.mark.parametrize("cool", [0, 20 * NS, 60 * NS])
def test_price_move_matches_a_loop(cool: int) -> None:
    ts, price = random_walk(4_000, seed=1, vol=6e-4)
    price[2_500:] *= 1.03  # a 3 % jump: must alert
    config = only("price_move", threshold=0.01, window_ns=30 * NS, cooldown_ns=cool)
    got = run(config, make(ts, price))
    ref = _price_move_reference(ts, price, 0.01, 30 * NS)
    assert any(i == 2_500 for i, _, _ in ref)
    kept = cooldown([(i, t) for i, t, _ in ref], cool) if cool else [i for i, _, _ in ref]
    assert [a.seq for a in got] == kept
    values = {i: r for i, _, r in ref}
    assert [a.value for a in got] == [values[i] for i in kept]
    assert all(a.threshold == 0.01 and a.rule == "price_move" for a in got)
    # Not triggered: no 30 s in this walk moves 10 % (the loop agrees).
    assert _price_move_reference(ts, price, 0.1, 30 * NS) == []
    assert run(only("price_move", threshold=0.1, window_ns=30 * NS), make(ts, price)) == []


def test_price_move_message() -> None:
    ts = T0 + np.arange(5, dtype=np.int64) * NS
    alerts = run(only("price_move"), make(ts, np.array([100, 100, 100, 102, 102.0])))
    assert [a.seq for a in alerts] == [3]
    assert alerts[0].message == ("BTC-USD moved +2.00% within 1m: 100 at "
                                 "2024-01-01T00:00:00.000000000Z -> 102")


# -- zscore --------------------------------------------------------------------------------

def test_zscore_matches_pandas_rolling_median() -> None:
    ts, price = random_walk(3_000, seed=2)
    price[1_500] *= 1.01  # a return far outside the window's spread
    price[1_501:] *= 1.01
    config = only("zscore", window=64, stride=1, threshold=6.0, cooldown_ns=0)
    got = run(config, make(ts, price))
    r = pd.Series(np.log(price)).diff()
    med = r.rolling(64).median().shift(1)
    mad = r.rolling(64).apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True).shift(1)
    z = ((r - med) / (mad * 1.482602218505602)).to_numpy()
    expected = np.flatnonzero(np.abs(np.nan_to_num(z)) > 6.0)
    assert 1_500 in expected
    assert [a.seq for a in got] == expected.tolist()
    np.testing.assert_allclose([a.value for a in got], z[expected], rtol=1e-9)
    assert run(only("zscore", window=64, stride=1, threshold=1e6), make(ts, price)) == []


def test_zscore_stride_uses_the_last_refresh_point() -> None:
    ts, price = random_walk(2_000, seed=3)
    config = only("zscore", window=50, stride=25, threshold=0.5, cooldown_ns=0)
    got = {a.seq: a.value for a in run(config, make(ts, price))}
    r = np.log(price[1:] / price[:-1])  # r[k] is the return at row k + 1
    assert got
    for row, value in list(got.items())[::37]:
        refresh = row // 25 * 25  # return index == row
        window = r[refresh - 50 - 1: refresh - 1]
        m = np.median(window)
        sigma = np.median(np.abs(window - m)) * 1.482602218505602
        assert value == pytest.approx((r[row - 1] - m) / sigma, rel=1e-9)  # ln(a/b) vs ln a - ln b


# -- volume_spike --------------------------------------------------------------------------

def _volume_reference(ts: np.ndarray, size: np.ndarray, factor: float, window: int,
                      buckets: int) -> list[tuple[int, int, float]]:
    bucket = ts // window
    volumes: dict[int, float] = {}
    first = int(ts[0])
    out = []
    for i in range(len(ts)):
        b = int(bucket[i])
        volumes[b] = volumes.get(b, 0.0) + float(size[i])  # left to right, like the rule
        base = [volumes.get(k, 0.0) for k in range(b - buckets, b)]
        med = statistics.median(base)
        if med > 0 and (b - buckets) * window >= first and volumes[b] / med >= factor:
            out.append((i, int(ts[i]), volumes[b] / med))
    return out


def test_volume_spike_matches_a_loop() -> None:
    rng = np.random.default_rng(4)
    n = 6_000
    ts = T0 + np.cumsum(rng.exponential(0.5e9, n)).astype(np.int64)  # ~50 min
    size = np.round(rng.lognormal(np.log(0.01), 0.8, n), 4)
    burst = (ts >= ts[4_000]) & (ts < ts[4_000] + 20 * NS)
    size[burst] *= 30
    price = np.full(n, 100.0)
    config = only("volume_spike", factor=4.0, window_ns=60 * NS, baseline_ns=10 * 60 * NS,
                  cooldown_ns=0)
    got = run(config, make(ts, price, size))
    ref = _volume_reference(ts, size, 4.0, 60 * NS, 10)
    assert any(i >= 4_000 for i, _, _ in ref)
    assert [(a.seq, a.value) for a in got] == [(i, v) for i, _, v in ref]
    with_cooldown = run(replace(config, rules=tuple(
        replace(r, cooldown_ns=60 * NS) if r.enabled else r for r in config.rules)),
        make(ts, price, size))
    assert [a.seq for a in with_cooldown] == cooldown([(i, t) for i, t, _ in ref], 60 * NS)
    assert len(with_cooldown) < len(ref)
    calm = run(only("volume_spike", factor=4.0, window_ns=60 * NS, baseline_ns=600 * NS),
               make(ts, price, np.round(rng.lognormal(np.log(0.01), 0.3, n), 4)))
    assert calm == []


def test_segment_cumsum_is_sequential_per_segment() -> None:
    rng = np.random.default_rng(5)
    for trial in range(30):
        n = int(rng.integers(1, 3_000))
        x = rng.choice([0.01, 0.02, 0.1, 0.3, 1e-8, 7.0], n)
        cuts = np.unique(np.r_[0, rng.integers(0, n, int(rng.integers(0, n // 2 + 2)))])
        initial = float(rng.choice([0.0, 0.1, 0.7]))
        got = segment_cumsum(x, cuts, initial)
        ends = np.r_[cuts[1:], n]
        for k, (a, b) in enumerate(zip(cuts, ends, strict=True)):
            total = initial if k == 0 else 0.0
            for i in range(a, b):
                total += float(x[i])
                assert got[i] == total, (trial, k, i)


# -- sma_cross -----------------------------------------------------------------------------

def test_sma_cross_matches_pandas_rolling_mean() -> None:
    ts, price = random_walk(20_000, seed=6, vol=3e-4)
    config = only("sma_cross", fast=10, slow=60, deadband=1e-6, cooldown_ns=0)
    got = run(config, make(ts, price))
    s = pd.Series(price)
    fast, slow = s.rolling(10).mean().to_numpy(), s.rolling(60).mean().to_numpy()
    expected, last = [], 0
    for i in range(len(price)):
        if np.isnan(slow[i]):
            continue
        side = 1 if fast[i] > slow[i] * (1 + 1e-6) else -1 if fast[i] < slow[i] * (1 - 1e-6) else 0
        if side:
            if last and side != last:
                expected.append(i)
            last = side
    assert len(expected) > 20
    assert [a.seq for a in got] == expected
    np.testing.assert_allclose([a.value for a in got], fast[expected], rtol=1e-12)
    np.testing.assert_allclose([a.threshold for a in got], slow[expected], rtol=1e-12)


def test_sma_cross_ignores_flat_prices_and_reports_direction() -> None:
    ts = T0 + np.arange(400, dtype=np.int64) * NS
    flat = np.full(400, 0.1)  # 0.1 * n / n is not exactly 0.1: rounding must not cross
    assert run(only("sma_cross", fast=3, slow=7), make(ts, flat)) == []
    price = np.r_[np.full(100, 10.0), np.full(100, 11.0), np.full(200, 9.0)]
    alerts = run(only("sma_cross", fast=3, slow=7, cooldown_ns=0), make(ts, price))
    assert [a.seq for a in alerts] == [200]  # up at 100 is the first side, not a cross
    assert "crossed below SMA(7)" in alerts[0].message


# -- silence -------------------------------------------------------------------------------

def test_silence_per_log_and_per_symbol() -> None:
    rng = np.random.default_rng(7)
    n = 3_000
    gaps = rng.exponential(2e9, n).astype(np.int64)
    gaps[[500, 1_800]] = [90 * NS, 200 * NS]
    ts = T0 + np.cumsum(gaps)
    symbol = rng.choice(["BTC-USD", "ETH-USD"], n, p=[0.9, 0.1])
    batch = make(ts, np.full(n, 100.0), symbol=symbol)
    got = run(only("silence", min_gap_ns=60 * NS), batch)
    diffs = np.diff(ts)
    expected = (np.flatnonzero(diffs >= 60 * NS) + 1).tolist()
    assert 500 in expected and 1_800 in expected
    assert [a.seq for a in got] == expected
    assert got[0].symbol == symbol[expected[0]] and got[0].value == diffs[expected[0] - 1] / 1e9
    per_symbol = run(only("silence", min_gap_ns=60 * NS, scope="symbol"), batch)
    df = pd.DataFrame({"ts": ts, "symbol": symbol})
    gap = df.groupby("symbol")["ts"].diff()
    assert [a.seq for a in per_symbol] == np.flatnonzero(gap >= 60 * NS).tolist()
    assert len(per_symbol) > len(got)  # ETH-USD is often quiet for a minute
    assert run(only("silence", min_gap_ns=300 * NS), batch) == []


# -- trade_id_gap --------------------------------------------------------------------------

def test_trade_id_gap_matches_a_loop_and_skips_bad_ids() -> None:
    ids: list[str | None] = [str(100 + i) for i in range(50)]
    ids[10] = "112"  # 110, 111 missing
    ids[20] = None  # skipped, so 119 -> 121 is one missing
    ids[30] = "abc"  # skipped
    ids[40] = "120"  # goes back: not a gap, and 141 after it is (20 missing)
    ts = T0 + np.arange(50, dtype=np.int64) * NS
    got = run(only("trade_id_gap"), make(ts, np.full(50, 1.0), trade_id=ids))
    expected, prev = [], None
    for i, text in enumerate(ids):
        if text is None or not text.isdigit():
            continue
        value = int(text)
        if prev is not None and value - prev - 1 >= 1:
            expected.append((i, value - prev - 1))
        prev = value
    assert [(a.seq, int(a.value)) for a in got] == expected
    assert expected[0] == (10, 2)
    assert got[0].message == "BTC-USD trade_id jumped from 109 to 112: 2 ids missing"
    # Without the column the rule is silent.
    assert run(only("trade_id_gap"), make(ts, np.full(50, 1.0))) == []


# -- the engine over batches ---------------------------------------------------------------

def _busy_stream(n: int = 3_000) -> pa.RecordBatch:
    """Two symbols, every rule triggered somewhere (with lowered thresholds)."""
    rng = np.random.default_rng(8)
    gaps = rng.exponential(0.4e9, n).astype(np.int64)
    gaps[1_200] = 100 * NS
    ts = T0 + np.cumsum(gaps)
    symbol = rng.choice(["BTC-USD", "ETH-USD"], n)
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 5e-4, n))), 3)
    price[2_000:] *= 1.02
    size = np.round(rng.lognormal(np.log(0.01), 0.5, n), 4)
    size[2_400:2_450] *= 40
    ids = [str(1_000 + i + (i > 1_500) * 3) for i in range(n)]
    return make(ts, price, size, symbol, ids)


BUSY_RULES = """
[rules.price_move]
threshold = 0.01
window = "60s"
[rules.zscore]
window = 40
stride = 10
threshold = 4
cooldown = "10s"
[rules.volume_spike]
factor = 3
window = "30s"
baseline = "5m"
[rules.sma_cross]
fast = 5
slow = 40
cooldown = "30s"
[rules.silence]
min_gap = "45s"
"""


def test_every_rule_fires_on_the_busy_stream_and_chunking_never_changes_an_alert() -> None:
    batch = _busy_stream()
    config = parse_rules(BUSY_RULES)
    whole = run(config, batch)
    assert {a.rule for a in whole} == {"price_move", "zscore", "volume_spike", "sma_cross",
                                       "silence", "trade_id_gap"}
    keys = [(a.seq, a.rule) for a in whole]
    order = [r.name for r in config.rules]
    assert keys == sorted(keys, key=lambda k: (k[0], order.index(k[1])))
    for chunk in (1, 7, 997):
        assert run(config, batch, chunk) == whole, chunk



def test_dictionary_symbols_give_the_same_alerts() -> None:
    """Sealed segments hand symbols over dictionary-encoded (Log.iter_batches(...,
    dictionary_symbols=True)); a row group's dictionary may hold names a batch never uses."""
    batch = _busy_stream()
    config = parse_rules(BUSY_RULES)
    whole = run(config, batch)
    symbol = batch.column("symbol")
    # The dictionary lists a name no row uses, first, so every code is renumbered.
    unused_first = pa.DictionaryArray.from_arrays(
        pc.add(pc.index_in(symbol, pa.array(["BTC-USD", "ETH-USD"])), 1).cast(pa.int32()),
        pa.array(["SOL-USD", "BTC-USD", "ETH-USD"]))
    for column in (pc.dictionary_encode(symbol), unused_first):
        dict_batch = batch.set_column(2, "symbol", column)
        assert run(config, dict_batch) == whole
        assert run(config, dict_batch, 997) == whole
    codes, names = symbol_codes(unused_first)
    assert names == ["BTC-USD", "ETH-USD"]
    assert [names[c] for c in codes[:50]] == symbol.to_pylist()[:50]


@pytest.mark.parametrize("ids", [
    ["1", "2", "5"],  # every id plain: the fast path
    ["1", "2", "+5", "6"],  # a sign is not a digit: skipped, as "abc" is
    ["1", "", "5", "6"],  # empty
    ["0000000000000000000007", "8", "10"],  # longer than 18 with leading zeros: counts
    ["1", "1234567890123456789", "3", "5"],  # 19 digits: beyond int64 ids, skipped
])
def test_trade_ids_parse_alike_on_every_path(ids: list[str]) -> None:
    n = len(ids)
    ts = T0 + np.arange(n, dtype=np.int64) * NS
    got = run(only("trade_id_gap"), make(ts, np.full(n, 1.0), trade_id=ids))
    expected, prev = [], None
    for i, text in enumerate(ids):
        if not (text.isascii() and text.isdigit()) or len(text.lstrip("0")) > 18:
            continue
        if prev is not None and int(text) - prev - 1 >= 1:
            expected.append((i, int(text) - prev - 1))
        prev = int(text)
    assert [(a.seq, int(a.value)) for a in got] == expected
    # A slice of a larger batch (a non-zero Arrow offset) reads the same bytes.
    padded = make(np.concatenate([ts[:1] - NS, ts]), np.full(n + 1, 1.0),
                  trade_id=["999", *ids]).slice(1)
    sliced = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n, dtype=np.int64)), *padded.columns[1:]], names=padded.schema.names)
    assert [(a.seq, int(a.value)) for a in run(only("trade_id_gap"), sliced)] == expected

def test_warm_up_resumes_exactly(tmp_path: Path) -> None:
    from recorder.log import Log, LogWriter

    batch = _busy_stream()
    with LogWriter(tmp_path / "busy", {"source": "test"}, optional_columns=("trade_id",),
                   segment_rows=1_000) as writer:
        writer.append(batch)
    log = Log(tmp_path / "busy")
    config = parse_rules(BUSY_RULES)
    whole = run(config, batch)
    for start in (0, 1, 1_234, 2_999):
        engine = AlertEngine(config, "test")
        engine.warm_up(log, start)
        rest = [a for b in log.iter_batches(from_seq=start, batch_rows=500,
                                            columns=AlertEngine.columns(log.columns))
                for a in engine.update(b)]
        assert rest == [a for a in whole if a.seq >= start], start
    engine = AlertEngine(config, "test")
    with pytest.raises(AlertError, match="batch starts at seq 5, expected 0"):
        engine.update(batch.slice(5, 10))
    with pytest.raises(AlertError, match="holds 3000 events"):
        engine.warm_up(log, 4_000)


# -- config --------------------------------------------------------------------------------

def test_defaults_and_the_documented_example() -> None:
    defaults = AlertConfig()
    assert [r.name for r in defaults.enabled] == ["price_move", "zscore", "volume_spike",
                                                  "sma_cross", "silence", "trade_id_gap"]
    assert load_rules(None) == defaults
    config = parse_rules('[rules.price_move]\nthreshold = 0.02\nwindow = "90s"\n'
                         'cooldown = "0s"\nsymbols = ["BTC-USD"]\n'
                         '[rules.volume_spike]\nfactor = 5\nwindow = "60s"\nbaseline = "30m"\n'
                         '[rules.zscore]\nenabled = false\n')
    move = config.rule("price_move")
    assert move.to_json() == {"enabled": True, "cooldown": "0s", "symbols": ["BTC-USD"],
                              "threshold": 0.02, "window": "90s"}
    assert not config.rule("zscore").enabled
    assert config.rule("sma_cross") == defaults.rule("sma_cross")  # unmentioned: defaults


@pytest.mark.parametrize(("text", "message"), [
    ('[rules.price_move]\nwindow = -1', 'rules.price_move.window: expected a duration like '
                                        '"60s", got -1'),
    ('[rules.price_move]\nwindow = "60"', 'rules.price_move.window: expected a duration like '
                                          '"60s", got "60"'),
    ('[rules.price_move]\nwindow = "0s"', 'rules.price_move.window: must be longer than 0, '
                                          'got "0s"'),
    ('[rules.price_move]\ntreshold = 0.1', "rules.price_move.treshold: unknown key; expected "
                                           "one of threshold, window, enabled, cooldown, "
                                           "symbols"),
    ('[rules.price_mvoe]\nthreshold = 0.1', "rules.price_mvoe: unknown rule; expected one of "
                                            "price_move, zscore, volume_spike, sma_cross, "
                                            "silence, trade_id_gap"),
    ('[rule.price_move]\nthreshold = 0.1', 'rule: unknown key; expected "rules"'),
    ('[rules.price_move]\nthreshold = true', "rules.price_move.threshold: expected a number, "
                                             "got true"),
    ('[rules.price_move]\nthreshold = 0', "rules.price_move.threshold: expected a number > 0 "
                                          "and <= 10, got 0"),
    ('[rules.zscore]\nwindow = 2.5', "rules.zscore.window: expected an integer, got 2.5"),
    ('[rules.zscore]\nwindow = 10\nstride = 20', "rules.zscore.stride: must be at most window "
                                                 "(10), got 20"),
    ('[rules.sma_cross]\nfast = 50\nslow = 50', "rules.sma_cross.fast: must be less than slow "
                                                "(50), got 50"),
    ('[rules.volume_spike]\nbaseline = "90s"', "rules.volume_spike.baseline: expected a "
                                               "multiple of window (1m), got 90s"),
    ('[rules.silence]\nscope = "venue"', 'rules.silence.scope: expected "log" or "symbol", '
                                         'got "venue"'),
    ('[rules.silence]\nenabled = "no"', 'rules.silence.enabled: expected true or false, '
                                        'got "no"'),
    ('[rules.silence]\nsymbols = []', 'rules.silence.symbols: expected a non-empty list of '
                                      'symbols like ["BTC-USD"], got []'),
    ("rules = 3", "rules: expected a table ([rules.NAME]), got 3"),
    ("[rules]\nprice_move = 1", "rules.price_move: expected a table ([rules.price_move]), "
                                "got 1"),
])
def test_config_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(AlertConfigError) as err:
        parse_rules(text, "r.toml")
    assert str(err.value) == f"r.toml: {message}"


def test_rules_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AlertConfigError, match=r"cannot read rules file .*nope.toml: No such"):
        load_rules(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules.price_move\n")
    with pytest.raises(AlertConfigError, match=r"bad.toml: not valid TOML: "):
        load_rules(bad)
