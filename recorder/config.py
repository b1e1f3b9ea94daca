"""Typed, validated simulator parameters, and parsers for the values users type (durations, symbols)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from recorder.errors import ConfigError

__all__ = [
    "DEFAULT_FAST_START",
    "SYMBOL_DEFAULTS",
    "SimConfig",
    "SymbolParams",
    "check_seconds",
    "parse_duration",
    "parse_instant",
    "parse_symbols",
]

# Fast recordings start here unless --start says otherwise, so two runs are byte-identical.
DEFAULT_FAST_START = "2024-01-01T00:00:00Z"

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,12}-[A-Z0-9]{1,12}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True, kw_only=True)
class SymbolParams:
    """One instrument's price process: GBM with optional Merton jumps, plus trade sizes and sides."""

    symbol: str
    start_price: float
    weight: float = 1.0  # share of the total --rate given to this symbol
    drift: float = 0.0  # annualized mu
    volatility: float = 0.6  # annualized sigma
    tick_size: float = 0.01
    jump_intensity: float = 0.0  # expected jumps per year
    jump_mean: float = 0.0  # mean log jump
    jump_std: float = 0.0  # std of log jump
    size_median: float = 0.01
    size_sigma: float = 1.2  # log-normal sigma of trade size
    lot_size: float = 0.0001
    side_bias: float = 0.15  # how strongly the taker side follows the price move

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.match(self.symbol):
            raise ConfigError(
                f"symbol {self.symbol!r} is malformed: expected BASE-QUOTE in capitals, e.g. BTC-USD"
            )
        positive = ("start_price", "weight", "tick_size", "size_median", "lot_size")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{self.symbol}: {name} must be a finite number > 0, got {value}")
        non_negative = ("volatility", "jump_intensity", "jump_std", "size_sigma")
        for name in non_negative:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{self.symbol}: {name} must be a finite number >= 0, got {value}")
        for name in ("drift", "jump_mean"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{self.symbol}: {name} must be finite")
        if not 0 <= self.side_bias <= 0.5:
            raise ConfigError(f"{self.symbol}: side_bias must be within [0, 0.5]")
        if self.start_price < self.tick_size:
            raise ConfigError(f"{self.symbol}: start_price must be at least one tick_size")

    @property
    def price_decimals(self) -> int:
        """Decimals needed to print a multiple of tick_size exactly (0.01 -> 2)."""
        text = f"{self.tick_size:.12f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0


# Realistic defaults: start price, annualized volatility, tick, typical size, share of the flow.
SYMBOL_DEFAULTS: dict[str, dict[str, float]] = {
    "BTC-USD": dict(start_price=65_000.0, volatility=0.55, tick_size=0.01, size_median=0.005,
                    lot_size=0.0001, weight=1.0, jump_intensity=12.0, jump_std=0.01),
    "ETH-USD": dict(start_price=3_400.0, volatility=0.70, tick_size=0.01, size_median=0.08,
                    lot_size=0.001, weight=0.6, jump_intensity=12.0, jump_std=0.012),
    "SOL-USD": dict(start_price=150.0, volatility=0.90, tick_size=0.01, size_median=2.0,
                    lot_size=0.01, weight=0.3, jump_intensity=12.0, jump_std=0.015),
}
_GENERIC_DEFAULTS = dict(start_price=100.0, volatility=0.6, tick_size=0.01, size_median=1.0,
                         lot_size=0.01, weight=0.3)


def default_symbol(symbol: str) -> SymbolParams:
    """Parameters for SYMBOL: the table above, or generic ones for an unknown pair."""
    return SymbolParams(symbol=symbol, **SYMBOL_DEFAULTS.get(symbol, _GENERIC_DEFAULTS))


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything that determines a simulated session's events; stored whole in the log."""

    seed: int = 0
    rate: float = 20.0  # mean total events per second across all symbols
    time_resolution_ns: int = 1_000  # event times on a microsecond grid, as venues publish
    symbols: tuple[SymbolParams, ...] = field(default_factory=lambda: (default_symbol("BTC-USD"),))

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (math.isfinite(self.rate) and 0 < self.rate <= 10_000_000):
            raise ConfigError(f"rate must be > 0 and <= 1e7 events/s, got {self.rate}")
        if not isinstance(self.time_resolution_ns, int) or not 1 <= self.time_resolution_ns <= 10**9:
            raise ConfigError("time_resolution_ns must be an integer within [1, 1e9]")
        if not self.symbols:
            raise ConfigError("at least one symbol is needed")
        names = [s.symbol for s in self.symbols]
        if len(set(names)) != len(names):
            raise ConfigError(f"symbols repeat: {','.join(names)}")

    def symbol_rates(self) -> list[float]:
        """Each symbol's mean events per second (the total --rate split by weight)."""
        total = sum(s.weight for s in self.symbols)
        return [self.rate * s.weight / total for s in self.symbols]

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "rate": self.rate,
                "time_resolution_ns": self.time_resolution_ns, "symbols": [asdict(s) for s in self.symbols]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimConfig:
        """Inverse of to_json; unknown keys are an error so a damaged log cannot pass as valid."""
        try:
            known = {f.name for f in fields(SymbolParams)}
            symbols = []
            for raw in data["symbols"]:
                extra = set(raw) - known
                if extra:
                    raise ConfigError(f"unknown simulator parameter(s): {', '.join(sorted(extra))}")
                symbols.append(SymbolParams(**raw))
            return cls(seed=int(data["seed"]), rate=float(data["rate"]),
                       time_resolution_ns=int(data["time_resolution_ns"]),
                       symbols=tuple(symbols))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"simulator parameters are incomplete or malformed: {exc}") from exc

    def with_overrides(self, overrides: dict[str, dict[str, float]]) -> SimConfig:
        """Apply per-symbol overrides ({'BTC-USD': {'volatility': 0.8}}, '*' for all)."""
        out = []
        known = {f.name for f in fields(SymbolParams)} - {"symbol"}
        for sym in self.symbols:
            changes: dict[str, float] = {}
            for key in ("*", sym.symbol):
                changes.update(overrides.get(key, {}))
            bad = set(changes) - known
            if bad:
                raise ConfigError(
                    f"unknown parameter(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(known))}"
                )
            out.append(replace(sym, **changes))  # type: ignore[arg-type]
        unknown = set(overrides) - {"*"} - {s.symbol for s in self.symbols}
        if unknown:
            raise ConfigError(f"--param names symbol(s) not recorded: {', '.join(sorted(unknown))}")
        return replace(self, symbols=tuple(out))


def parse_symbols(text: str) -> tuple[SymbolParams, ...]:
    """'BTC-USD,ETH-USD' -> default parameters for each."""
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ConfigError(f"--symbols {text!r} is malformed: expected e.g. BTC-USD,ETH-USD")
    return tuple(default_symbol(n) for n in names)


def parse_duration(text: str) -> float:
    """'10m' -> 600.0 seconds; accepts ms, s, m, h, d (bare numbers are seconds)."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ConfigError(f"duration {text!r} is malformed: expected e.g. 90s, 10m, 6h, 2d")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} must be > 0")
    return seconds


def check_seconds(flag: str, value: float, low: float, high: float, *,
                  open_low: bool = False) -> None:
    """A recording option in seconds: finite and within [low, high] ((low, high] with
    open_low), else the one-line error every recorder gives."""
    if not (math.isfinite(value) and (value > low if open_low else value >= low)
            and value <= high):
        raise ConfigError(f"{flag} must be within [{low:g}, {high:g}] s, got {value}")


def parse_instant(text: str) -> int:
    """ISO 8601 -> integer nanoseconds since the epoch (naive times are taken as UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"instant {text!r} is not ISO 8601 (e.g. 2024-01-01T00:00:00Z)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
