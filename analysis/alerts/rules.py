"""The alert rules by name: one small class per rule (price_rules, flow_rules), pure numpy over
one symbol's slice of a batch.

Each rule keeps a small per-symbol state (`new_state`) and turns a slice into candidate rows
(`evaluate`); the engine applies the cooldown and builds the alerts. Everything is in event
time and exactly independent of where batches are cut: a rule only compares values that are
computed from the same inputs in the same order whatever the batching (raw prices and
timestamps, sequential sums restarted at fixed points). Formulas: docs/analysis.md, "Alerts".
"""

from __future__ import annotations

from typing import Any

from analysis.alerts.config import RuleConfig
from analysis.alerts.flow_rules import Silence, TradeIdGap, VolumeSpike
from analysis.alerts.price_rules import PriceMove, SmaCross, ZScore
from analysis.alerts.rule_base import Hits, Rule, SymbolSlice, bucket_runs, segment_cumsum

__all__ = ["RULES", "Hits", "Rule", "SymbolSlice", "bucket_runs", "make_rule", "segment_cumsum"]

RULES: dict[str, type[Rule[Any]]] = {
    "price_move": PriceMove, "zscore": ZScore, "volume_spike": VolumeSpike,
    "sma_cross": SmaCross, "silence": Silence, "trade_id_gap": TradeIdGap,
}


def make_rule(config: RuleConfig) -> Rule[Any]:
    return RULES[config.name](config)
