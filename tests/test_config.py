from __future__ import annotations

import pytest

from recorder.config import (
    SimConfig,
    SymbolParams,
    parse_duration,
    parse_instant,
    parse_symbols,
)
from recorder.errors import ConfigError


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("6h", 21600),
                                               ("2d", 172800), ("1.5", 1.5), ("250ms", 0.25)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "-5m", "0s", "m", "1e3"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


def test_parse_instant_is_exact_to_the_nanosecond() -> None:
    assert parse_instant("1970-01-01T00:00:01.000001Z") == 1_000_001_000
    assert parse_instant("2024-01-01T00:00:00+01:00") == parse_instant("2023-12-31T23:00:00Z")
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_instant("yesterday")


def test_symbols_and_defaults() -> None:
    syms = parse_symbols("BTC-USD,ETH-USD,FOO-BAR")
    assert [s.symbol for s in syms] == ["BTC-USD", "ETH-USD", "FOO-BAR"]
    assert syms[0].start_price > syms[1].start_price > 0
    for bad in ["btc-usd", "BTC", "BTC-USD,,ETH-USD", "BTC_USD"]:
        with pytest.raises(ConfigError):
            parse_symbols(bad)


@pytest.mark.parametrize(("field", "value"), [("volatility", -0.1), ("start_price", 0.0),
                                              ("tick_size", float("nan")), ("weight", -1.0),
                                              ("side_bias", 0.9)])
def test_symbol_params_validate(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        SymbolParams(**{"symbol": "BTC-USD", "start_price": 100.0, field: value})


def test_sim_config_json_roundtrip_and_strictness() -> None:
    cfg = SimConfig(seed=3, rate=7.5, symbols=parse_symbols("BTC-USD,ETH-USD"))
    assert SimConfig.from_json(cfg.to_json()) == cfg
    bad = cfg.to_json()
    bad["symbols"][0]["volatilty"] = 0.1  # a typo must not pass silently
    with pytest.raises(ConfigError, match="volatilty"):
        SimConfig.from_json(bad)
    with pytest.raises(ConfigError, match="rate"):
        SimConfig(rate=0)
    with pytest.raises(ConfigError, match="repeat"):
        SimConfig(symbols=parse_symbols("BTC-USD,BTC-USD"))


def test_overrides_apply_per_symbol_and_reject_typos() -> None:
    cfg = SimConfig(symbols=parse_symbols("BTC-USD,ETH-USD"))
    out = cfg.with_overrides({"*": {"volatility": 0.2}, "ETH-USD": {"start_price": 3000.0}})
    assert [s.volatility for s in out.symbols] == [0.2, 0.2]
    assert out.symbols[1].start_price == 3000.0
    with pytest.raises(ConfigError, match="unknown parameter"):
        cfg.with_overrides({"*": {"vol": 0.2}})
    with pytest.raises(ConfigError, match="SOL-USD"):
        cfg.with_overrides({"SOL-USD": {"volatility": 0.2}})
