"""`ticktape analyze|report`: indicators and reports from logs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from analysis.alerts import load_rules
from analysis.analyze import AnalyzeConfig, analyze
from analysis.errors import AnalysisError
from analysis.report import ReportConfig, build_report
from analysis.streaming import IndicatorSpec
from recorder.config import parse_duration
from recorder.errors import ConfigError
from ticktape.progress import ProgressBar

__all__ = ["register"]


def _windows(text: str) -> tuple[int, ...]:
    """'5,20' -> (5, 20); argparse turns the ValueError into a usage error."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from exc
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"windows must be >= 1, got {text!r}")
    return values


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze", help="export indicator columns for every event to Parquet",
        description="Write seq, ts, symbol, price and one column per indicator, computed per "
                    "symbol (formulas: docs/analysis.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.parquet")
    p.add_argument("--sma", type=_windows, default=(5,), help="SMA windows, e.g. 5,20")
    p.add_argument("--ema", type=_windows, default=(), help="EMA spans, e.g. 12,26")
    p.add_argument("--vwap", action="store_true", help="cumulative VWAP column")
    p.add_argument("--rolling-vwap", type=_windows, default=(), help="VWAP over N trades")
    p.add_argument("--returns", action="store_true", help="log return column")
    p.add_argument("--volatility", type=_windows, default=(),
                   help="annualized realized volatility over N returns")
    p.add_argument("--drawdown", action="store_true", help="drawdown from the running peak")
    p.add_argument("--anomaly-window", type=int, default=0,
                   help="robust z-score window in returns (0: off)")
    p.add_argument("--anomaly-threshold", type=float, default=8.0, help="|z| that flags")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=run_analyze)

    p = sub.add_parser(
        "report", help="write a self-contained HTML report of a log",
        description="One HTML page (plotly.js inline, works offline): price with SMA, "
                    "candles and volume, returns, volatility, anomalies, alerts and a "
                    "summary. The "
                    "same log and options give the same bytes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                   metavar="report.html")
    p.add_argument("--json", type=Path, metavar="summary.json", help="also write the summary")
    p.add_argument("--sma", type=_windows, default=(5,), help="SMA windows to draw")
    p.add_argument("--interval", help="candle interval, e.g. 1m (default: chosen from the span)")
    p.add_argument("--anomaly-window", type=int, default=300, help="robust z-score window")
    p.add_argument("--anomaly-threshold", type=float, default=8.0, help="|z| that flags")
    p.add_argument("--buckets", type=int, default=2_000,
                   help="display buckets per series (min/max kept in each)")
    p.add_argument("--rules", type=Path, metavar="FILE",
                   help="alert rules TOML marked on the price charts and counted in the "
                        "summary (default: the documented defaults; see `ticktape alerts`)")
    p.set_defaults(run=run_report)


def run_analyze(args: argparse.Namespace) -> int:
    spec = IndicatorSpec(sma=args.sma, ema=args.ema, vwap=args.vwap,
                         rolling_vwap=args.rolling_vwap, returns=args.returns,
                         volatility=args.volatility, drawdown=args.drawdown,
                         anomaly_window=args.anomaly_window,
                         anomaly_threshold=args.anomaly_threshold)
    bar = ProgressBar(f"analyzing {args.log.name}")
    try:
        rows = analyze(AnalyzeConfig(log=args.log, out=args.output, spec=spec), progress=bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"output": str(args.output), "rows": rows, "columns": spec.columns()}))
    else:
        print(f"wrote {rows:,} rows with {', '.join(spec.columns())} to {args.output}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    try:
        interval = parse_duration(args.interval) if args.interval else None
    except ConfigError as exc:
        raise AnalysisError(f"--interval: {exc}") from exc
    config = ReportConfig(log=args.log, out=args.output, summary_json=args.json, sma=args.sma,
                          interval_s=interval, anomaly_window=args.anomaly_window,
                          anomaly_threshold=args.anomaly_threshold, buckets=args.buckets,
                          alert_rules=load_rules(args.rules))
    bar = ProgressBar(f"reporting {args.log.name}")
    try:
        summary = build_report(config, progress=bar)
    finally:
        bar.close()
    print(f"wrote {args.output} ({summary['events']:,} events, {summary['interval']} candles, "
          f"content {summary['content_sha256'][:12]})")
    return 0
