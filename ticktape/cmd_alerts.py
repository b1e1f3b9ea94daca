"""`ticktape alerts`: the alerts that rules (a TOML file, or the defaults) raise on a log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from analysis.alerts import Alert, AlertConfig, alerts_table, count_by_rule, evaluate_log, load_rules
from analysis.analyze import check_output_path
from analysis.errors import AnalysisError
from recorder.log import Log, atomic_path
from ticktape.progress import ProgressBar

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "alerts", help="list the alerts that rules raise on a log",
        description="Evaluate alert rules (price_move, zscore, volume_spike, sma_cross, "
                    "silence, trade_id_gap) over a log in event time and print one alert "
                    "per line. Without --rules the documented defaults run; a rules file "
                    "overrides them (TOML, e.g. [rules.price_move] threshold = 0.01; "
                    "enabled = false switches a rule off). Formulas and defaults: "
                    "docs/analysis.md. A replay of the log raises the same alerts.")
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("--rules", type=Path, metavar="FILE",
                   help="rules TOML file (default: the documented defaults)")
    p.add_argument("--json", action="store_true",
                   help="print the alerts as one JSON list (with -o: a JSON summary)")
    p.add_argument("-o", "--output", type=Path, metavar="alerts.parquet",
                   help="write the alerts to this Parquet file and print a summary instead")
    p.set_defaults(run=run_alerts)


def _write(path: Path, alerts: list[Alert], log: Log, config: AlertConfig) -> None:
    meta = {"ticktape_alerts": json.dumps({"log": log.name, "rules": config.to_json()},
                                          sort_keys=True)}
    try:
        with atomic_path(path) as tmp:
            pq.write_table(alerts_table(alerts, meta), tmp, compression="zstd")
    except OSError as exc:
        raise AnalysisError(f"cannot write {path}: {exc.strerror or exc}") from exc


def run_alerts(args: argparse.Namespace) -> int:
    config = load_rules(args.rules)
    log = Log(args.log)
    if args.output is not None:
        check_output_path(args.output, args.log)
    bar = ProgressBar(f"checking {log.name}")
    try:
        alerts = list(evaluate_log(config, log, progress=bar))
    finally:
        bar.close()
    counts = count_by_rule(alerts, config)
    if args.output is not None:
        _write(args.output, alerts, log, config)
        if args.json:
            print(json.dumps({"output": str(args.output), "alerts": len(alerts),
                              "by_rule": counts}))
        else:
            print(f"wrote {len(alerts):,} alerts ({_counts(counts)}) to {args.output}")
        return 0
    if args.json:
        print(json.dumps([a.to_json() for a in alerts]))
        return 0
    for alert in alerts:
        print(alert.line())
    print(f"{len(alerts):,} alerts over {log.events:,} events ({_counts(counts)})",
          file=sys.stderr)
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items()) or "no rules enabled"
