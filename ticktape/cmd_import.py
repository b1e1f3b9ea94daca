"""`ticktape import`: exchange trade dumps (Binance, tardis.dev, Bybit, any CSV) into one log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recorder.importers import FORMATS, ImportConfig, import_files, parse_column_map
from recorder.importers.config import SIDE_CONVENTIONS, TIME_UNITS
from recorder.log import DEFAULT_SEGMENT_ROWS
from ticktape.progress import ProgressBar

__all__ = ["register"]

_EPILOG = """\
examples:
  ticktape import data/btc-jan BTCUSDT-trades-2025-01-*.zip
  ticktape import data/eth binance-futures_trades_2024-06-01_ETHUSDT.csv.gz --format tardis-trades
  ticktape import data/x trades.csv --format csv --map ts=time,price=p,size=q,side=s \\
      --time-unit ms --symbol BTC-USD --venue kraken

Files may be plain, .gz or .zip (one CSV inside; a FILE.CHECKSUM beside it is verified), in
any order; they become one log ordered by time, with trade_id and venue columns, duplicates
(same venue, symbol, trade id and time) dropped. side is always the taker's side.
Exit codes: 0 imported, 2 bad option or input (nothing is written). Details: docs/import.md.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import", help="turn exchange trade dumps into a log",
        description="Import trade files (Binance public data, tardis.dev, Bybit, or any CSV with "
                    "a column map) into one ticktape log ordered by time. Without --format the "
                    "format is recognised from the files' content.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", metavar="LOG", type=Path, help="the log directory to create")
    p.add_argument("files", metavar="FILE", type=Path, nargs="+", help="files to import")
    p.add_argument("--format", choices=FORMATS, metavar="FORMAT",
                   help=f"one of {', '.join(FORMATS)} (default: recognised from the content)")
    p.add_argument("--symbol", metavar="SYM",
                   help="symbol of every row (BTCUSDT or BTC-USDT; overrides the files')")
    p.add_argument("--venue", metavar="NAME", help="venue of every row (overrides the format's)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing log (only a ticktape log is ever replaced)")
    p.add_argument("--segment-rows", type=int, default=DEFAULT_SEGMENT_ROWS, metavar="N",
                   help=f"events per segment (default {DEFAULT_SEGMENT_ROWS:,})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    csv = p.add_argument_group("--format csv")
    csv.add_argument("--map", metavar="FIELD=COLUMN,...",
                     help="columns: ts, price, size (required), side, symbol, trade_id, venue; "
                          "e.g. ts=time,price=p,size=q,side=s")
    csv.add_argument("--time-unit", choices=TIME_UNITS, metavar="UNIT",
                     help=f"unit of the ts column: {'|'.join(TIME_UNITS)} (iso: ISO 8601)")
    csv.add_argument("--side-from", choices=SIDE_CONVENTIONS, metavar="CONVENTION",
                     help="what the side column says: taker (buy/sell of the taker, default), "
                          "maker (of the resting order), buyer-maker-bool (true: taker sold)")
    p.set_defaults(run=run_import)


def run_import(args: argparse.Namespace) -> int:
    cfg = ImportConfig(
        log=args.log, files=tuple(args.files), format=args.format, symbol=args.symbol,
        venue=args.venue, overwrite=args.overwrite,
        column_map=parse_column_map(args.map) if args.map else (), time_unit=args.time_unit,
        side_from=args.side_from, segment_rows=args.segment_rows)
    bar = ProgressBar("importing")
    try:
        report = import_files(cfg, progress=bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0
    data = report.to_json()
    how = "recognised from the content" if report.detected else "as asked"
    variants = f" ({', '.join(report.variants)})" if report.variants else ""
    print(f"format     {report.format}{variants}, {how}", file=sys.stdout)
    lines = [
        f"imported   {report.events:,} events from {report.files} file(s) into {report.log}",
        f"time       {data['first_ts'] or '-'} .. {data['last_ts'] or '-'}",
        "symbols    " + (", ".join(f"{s} ({n})" if s != n else s
                                   for s, n in report.symbols.items()) or "-"),
        f"venues     {', '.join(report.venues) or '-'}",
        f"duplicates {report.duplicates_dropped:,} dropped",
    ]
    if report.checksums_verified:
        lines.append(f"checksums  {report.checksums_verified} verified")
    if report.sorted_in_runs:
        lines.append(f"sorted     {len(report.sorted_in_runs)} file(s) were not in time order "
                     "and were sorted")
    print("\n".join(lines))
    return 0
