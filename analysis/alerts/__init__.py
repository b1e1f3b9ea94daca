"""Alert rules over logs: config (TOML), rules (pure numpy), engine (streaming), model (Alert).

Formulas and defaults: docs/analysis.md, "Alerts".
"""

from analysis.alerts.config import RULE_CLASSES, AlertConfig, load_rules, parse_rules
from analysis.alerts.engine import AlertEngine, count_by_rule, evaluate_log
from analysis.alerts.errors import AlertConfigError, AlertError
from analysis.alerts.model import ALERT_SCHEMA, Alert, alerts_table

__all__ = [
    "ALERT_SCHEMA",
    "RULE_CLASSES",
    "Alert",
    "AlertConfig",
    "AlertConfigError",
    "AlertEngine",
    "AlertError",
    "alerts_table",
    "count_by_rule",
    "evaluate_log",
    "load_rules",
    "parse_rules",
]
