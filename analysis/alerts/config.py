"""Alert rules configuration: a TOML file parsed with tomllib into frozen, validated dataclasses.

Shape (every table and key optional; formulas and defaults: docs/analysis.md, "Alerts"):

    [rules.price_move]
    threshold = 0.01      # |return| that alerts
    window = "60s"
    cooldown = "60s"
    symbols = ["BTC-USD"] # optional: only these symbols
    enabled = true

A rule the file does not mention runs with its defaults; `enabled = false` switches one off.
Unknown tables and keys, wrong types and out-of-range values are errors naming the key, e.g.
`rules.price_move.window: expected a duration like "60s", got -1`. Durations are strings
with a unit: 500ms, 60s, 5m, 1h, 1d.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from analysis.alerts.errors import AlertConfigError

__all__ = [
    "RULE_CLASSES",
    "AlertConfig",
    "PriceMoveRule",
    "RuleConfig",
    "SilenceRule",
    "SmaCrossRule",
    "TradeIdGapRule",
    "VolumeSpikeRule",
    "ZScoreRule",
    "format_duration",
    "load_rules",
    "parse_rules",
]

NS = 1_000_000_000
_UNITS = {"ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86_400 * NS}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_MAX_DURATION = 366 * 86_400 * NS


def format_duration(ns: int) -> str:
    """60_000_000_000 -> '60s'; the largest unit that divides the duration exactly."""
    if ns == 0:
        return "0s"
    for unit in ("d", "h", "m", "s", "ms"):
        if ns % _UNITS[unit] == 0:
            return f"{ns // _UNITS[unit]}{unit}"
    return f"{ns / NS:g}s"


@dataclass(frozen=True, kw_only=True)
class RuleConfig:
    """What every rule has: on/off, a cooldown in event time, an optional symbol list."""

    name: ClassVar[str] = ""
    enabled: bool = True
    cooldown_ns: int = 60 * NS
    symbols: tuple[str, ...] | None = None  # None: every symbol

    def applies_to(self, symbol: str) -> bool:
        return self.symbols is None or symbol in self.symbols

    def to_json(self) -> dict[str, Any]:
        """The rule as its TOML keys (durations as strings), for summaries and metadata."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            key = f.name.removesuffix("_ns")
            if f.name.endswith("_ns"):
                value = format_duration(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


@dataclass(frozen=True, kw_only=True)
class PriceMoveRule(RuleConfig):
    """|p / p_ref - 1| >= threshold, p_ref the symbol's oldest price within `window`."""

    name: ClassVar[str] = "price_move"
    threshold: float = 0.01
    window_ns: int = 60 * NS


@dataclass(frozen=True, kw_only=True)
class ZScoreRule(RuleConfig):
    """|robust z-score of the tick's log return| > threshold (indicators.robust_zscore)."""

    name: ClassVar[str] = "zscore"
    window: int = 300  # returns
    stride: int = 300  # statistics refreshed every `stride` returns
    threshold: float = 8.0


@dataclass(frozen=True, kw_only=True)
class VolumeSpikeRule(RuleConfig):
    """Volume of the current `window` bucket >= factor x median of the `baseline` before it."""

    name: ClassVar[str] = "volume_spike"
    factor: float = 5.0
    window_ns: int = 60 * NS
    baseline_ns: int = 30 * 60 * NS

    @property
    def buckets(self) -> int:
        return self.baseline_ns // self.window_ns


@dataclass(frozen=True, kw_only=True)
class SmaCrossRule(RuleConfig):
    """SMA(fast) crosses SMA(slow), over the symbol's last N prices."""

    name: ClassVar[str] = "sma_cross"
    cooldown_ns: int = 5 * 60 * NS
    fast: int = 50
    slow: int = 500
    deadband: float = 1e-9  # |fast/slow - 1| within this counts as neither side


@dataclass(frozen=True, kw_only=True)
class SilenceRule(RuleConfig):
    """A gap of at least `min_gap` of event time between consecutive trades."""

    name: ClassVar[str] = "silence"
    cooldown_ns: int = 0
    min_gap_ns: int = 60 * NS
    scope: str = "log"  # "log": any trade; "symbol": per symbol


@dataclass(frozen=True, kw_only=True)
class TradeIdGapRule(RuleConfig):
    """A numeric trade_id that skips at least `min_missing` ids after the previous one."""

    name: ClassVar[str] = "trade_id_gap"
    cooldown_ns: int = 0
    min_missing: int = 1


# The order rules are evaluated and reported in (ties at one seq are broken by it).
RULE_CLASSES: tuple[type[RuleConfig], ...] = (
    PriceMoveRule, ZScoreRule, VolumeSpikeRule, SmaCrossRule, SilenceRule, TradeIdGapRule)
_BY_NAME = {cls.name: cls for cls in RULE_CLASSES}


@dataclass(frozen=True, kw_only=True)
class AlertConfig:
    """The rules to run, one config per rule (disabled ones included), in RULE_CLASSES order."""

    rules: tuple[RuleConfig, ...] = field(default_factory=lambda: tuple(c() for c in RULE_CLASSES))
    source: str = "defaults"  # the file they came from, for messages and metadata

    @property
    def enabled(self) -> tuple[RuleConfig, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def rule(self, name: str) -> RuleConfig:
        return next(r for r in self.rules if r.name == name)

    def to_json(self) -> dict[str, Any]:
        return {r.name: r.to_json() for r in self.rules}


# -- parsing -------------------------------------------------------------------------------

def _show(value: Any) -> str:
    """A TOML value as the user wrote it (strings quoted, booleans lower case)."""
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def _duration(key: str, value: Any, *, allow_zero: bool = False) -> int:
    match = _DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise AlertConfigError(f'{key}: expected a duration like "60s", got {_show(value)}')
    ns = round(float(match.group(1)) * _UNITS[match.group(2)])
    if ns == 0 and not allow_zero:
        raise AlertConfigError(f"{key}: must be longer than 0, got {_show(value)}")
    if ns > _MAX_DURATION:
        raise AlertConfigError(f"{key}: must be at most 366d, got {_show(value)}")
    return ns


def _number(key: str, value: Any, *, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlertConfigError(f"{key}: expected a number, got {_show(value)}")
    if value < low or value > high or (low_open and value == low):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise AlertConfigError(f"{key}: expected a number {bound} and <= {high:g}, "
                               f"got {_show(value)}")
    return float(value)


def _integer(key: str, value: Any, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AlertConfigError(f"{key}: expected an integer, got {_show(value)}")
    if not low <= value <= high:
        raise AlertConfigError(f"{key}: expected an integer within [{low}, {high}], "
                               f"got {_show(value)}")
    return value


def _symbols(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or \
            not all(isinstance(s, str) and s.strip() for s in value):
        raise AlertConfigError(f'{key}: expected a non-empty list of symbols like ["BTC-USD"], '
                               f"got {_show(value)}")
    return tuple(value)


def _common(prefix: str, table: dict[str, Any]) -> dict[str, Any]:
    """The keys every rule has: enabled, cooldown (may be 0s), symbols."""
    out: dict[str, Any] = {}
    if "enabled" in table:
        if not isinstance(table["enabled"], bool):
            raise AlertConfigError(f"{prefix}.enabled: expected true or false, "
                                   f"got {_show(table['enabled'])}")
        out["enabled"] = table["enabled"]
    if "cooldown" in table:
        out["cooldown_ns"] = _duration(f"{prefix}.cooldown", table["cooldown"], allow_zero=True)
    if "symbols" in table:
        out["symbols"] = _symbols(f"{prefix}.symbols", table["symbols"])
    return out


# Per rule: TOML key -> (attribute, parsed value).
_KEYS: dict[str, dict[str, Any]] = {
    "price_move": {
        "threshold": lambda k, v: ("threshold", _number(k, v, low=0, high=10, low_open=True)),
        "window": lambda k, v: ("window_ns", _duration(k, v)),
    },
    "zscore": {
        "window": lambda k, v: ("window", _integer(k, v, low=2, high=100_000)),
        "stride": lambda k, v: ("stride", _integer(k, v, low=1, high=100_000)),
        "threshold": lambda k, v: ("threshold", _number(k, v, low=0, high=1e6, low_open=True)),
    },
    "volume_spike": {
        "factor": lambda k, v: ("factor", _number(k, v, low=0, high=1e9, low_open=True)),
        "window": lambda k, v: ("window_ns", _duration(k, v)),
        "baseline": lambda k, v: ("baseline_ns", _duration(k, v)),
    },
    "sma_cross": {
        "fast": lambda k, v: ("fast", _integer(k, v, low=1, high=1_000_000)),
        "slow": lambda k, v: ("slow", _integer(k, v, low=2, high=1_000_000)),
        "deadband": lambda k, v: ("deadband", _number(k, v, low=0, high=0.5)),
    },
    "silence": {
        "min_gap": lambda k, v: ("min_gap_ns", _duration(k, v)),
        "scope": lambda k, v: ("scope", _scope(k, v)),
    },
    "trade_id_gap": {
        "min_missing": lambda k, v: ("min_missing", _integer(k, v, low=1, high=10**15)),
    },
}
_SHARED = ("enabled", "cooldown", "symbols")


def _scope(key: str, value: Any) -> str:
    if value not in ("log", "symbol"):
        raise AlertConfigError(f'{key}: expected "log" or "symbol", got {_show(value)}')
    return str(value)


def _rule(name: str, table: Any) -> RuleConfig:
    prefix = f"rules.{name}"
    if not isinstance(table, dict):
        raise AlertConfigError(f"{prefix}: expected a table ([{prefix}]), got {_show(table)}")
    known = _KEYS[name]
    for key in table:
        if key not in known and key not in _SHARED:
            raise AlertConfigError(f"{prefix}.{key}: unknown key; expected one of "
                                   f"{', '.join([*known, *_SHARED])}")
    values = _common(prefix, table)
    for key, parse in known.items():
        if key in table:
            attr, value = parse(f"{prefix}.{key}", table[key])
            values[attr] = value
    rule = _BY_NAME[name](**values)
    _check_rule(prefix, rule)
    return rule


def _check_rule(prefix: str, rule: RuleConfig) -> None:
    """Constraints between keys (each key alone was checked while parsing)."""
    if isinstance(rule, ZScoreRule) and rule.stride > rule.window:
        raise AlertConfigError(f"{prefix}.stride: must be at most window ({rule.window}), "
                               f"got {rule.stride}")
    if isinstance(rule, SmaCrossRule) and rule.fast >= rule.slow:
        raise AlertConfigError(f"{prefix}.fast: must be less than slow ({rule.slow}), "
                               f"got {rule.fast}")
    if isinstance(rule, VolumeSpikeRule):
        if rule.baseline_ns % rule.window_ns or rule.baseline_ns < rule.window_ns:
            raise AlertConfigError(
                f"{prefix}.baseline: expected a multiple of window "
                f"({format_duration(rule.window_ns)}), got {format_duration(rule.baseline_ns)}")
        if rule.buckets > 10_000:
            raise AlertConfigError(f"{prefix}.baseline: at most 10000 windows, got "
                                   f"{rule.buckets}")


def parse_rules(text: str, source: str = "rules") -> AlertConfig:
    """Rules from TOML text; errors name `source` and the key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AlertConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        for key in doc:
            if key != "rules":
                raise AlertConfigError(f'{key}: unknown key; expected "rules"')
        tables = doc.get("rules", {})
        if not isinstance(tables, dict):
            raise AlertConfigError(f"rules: expected a table ([rules.NAME]), got {_show(tables)}")
        for name in tables:
            if name not in _BY_NAME:
                raise AlertConfigError(f"rules.{name}: unknown rule; expected one of "
                                       f"{', '.join(_BY_NAME)}")
        rules = tuple(_rule(cls.name, tables[cls.name]) if cls.name in tables else cls()
                      for cls in RULE_CLASSES)
    except AlertConfigError as exc:
        raise AlertConfigError(f"{source}: {exc}") from None
    return AlertConfig(rules=rules, source=source)


def load_rules(path: Path | None) -> AlertConfig:
    """The rules of a TOML file, or the documented defaults when `path` is None."""
    if path is None:
        return AlertConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertConfigError(f"cannot read rules file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise AlertConfigError(f"{path}: not UTF-8 text") from exc
    return parse_rules(text, str(path))
