"""`ticktape record`: a seeded simulated session into a log, or (--feed) a venue's live trades."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recorder.config import SimConfig, parse_duration, parse_instant, parse_symbols
from recorder.errors import ConfigError
from recorder.feeds import VENUES, FeedConfig, record_feed
from recorder.record import RecordConfig, record
from ticktape.progress import ProgressBar

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "record", help="record a seeded simulated session into a log",
        description="Record a simulated trade stream into a Parquet event log. Fast mode "
                    "generates the whole session at once; --realtime paces the same events "
                    "to the wall clock.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("log", metavar="LOG", type=Path, help="log directory to create")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same events)")
    p.add_argument("--symbols", default="BTC-USD", help="comma-separated instruments")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--ticks", type=int, help="number of events to record")
    span.add_argument("--duration", help="simulated span, e.g. 90s, 10m, 6h, 2d "
                                         "(fast mode default: 1h)")
    p.add_argument("--rate", type=float, default=20.0,
                   help="mean total events per second across all symbols")
    p.add_argument("--start", help="ISO 8601 anchor of simulated time (fast default "
                                   "2024-01-01T00:00:00Z; real-time default: now)")
    p.add_argument("--realtime", action="store_true", help="pace events to the wall clock")
    p.add_argument("--clock", choices=["sim", "wall"], default="sim",
                   help="real-time ts: simulated times, or wall clock at emission")
    p.add_argument("--flush-interval", type=float, default=1.0, metavar="S",
                   help="seconds between durable journal flushes")
    p.add_argument("--seal-interval", type=float, default=60.0, metavar="S",
                   help="real time: seal the open segment at least this often, so plain Parquet "
                        "readers (pandas, DuckDB, pyarrow) see the recording at most S seconds "
                        "(plus one flush) behind")
    p.add_argument("--param", action="append", default=[], metavar="[SYMBOL.]KEY=VALUE",
                   help="override a simulator parameter for one symbol or all, e.g. "
                        "volatility=0.8 or ETH-USD.start_price=3000 (repeatable)")
    p.add_argument("--segment-rows", type=int, default=1_000_000,
                   help="events per sealed Parquet segment")
    p.add_argument("--overwrite", action="store_true", help="replace an existing log")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    live = p.add_argument_group(
        "live feeds", "record an exchange's public trade stream instead of the simulator "
                      "(docs/feeds.md); --symbols then takes exchange symbols or BASE-QUOTE")
    live.add_argument("--feed", choices=sorted(VENUES), help="venue whose live trades to record")
    live.add_argument("--feed-url", metavar="URL",
                      help="replace the venue's documented WebSocket base URL (paths and "
                           "messages unchanged), e.g. a local test server")
    live.add_argument("--rest-url", metavar="URL",
                      help="replace the venue's documented REST base URL used for backfill")
    live.add_argument("--silence-timeout", type=float, default=30.0, metavar="S",
                      help="reconnect when no message arrived for S seconds (a probe is sent "
                           "after S/2)")
    p.set_defaults(run=run, simulator_defaults={
        dest: p.get_default(dest) for dest in SIMULATOR_ONLY})


# Options of the simulator only: --feed refuses them when set to anything but their default.
SIMULATOR_ONLY = {"seed": "--seed", "ticks": "--ticks", "rate": "--rate", "start": "--start",
                  "realtime": "--realtime", "clock": "--clock", "param": "--param"}


def parse_params(items: list[str]) -> dict[str, dict[str, float]]:
    """['volatility=0.8', 'ETH-USD.weight=2'] -> {'*': {...}, 'ETH-USD': {...}}."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} is malformed: expected [SYMBOL.]KEY=VALUE")
        symbol, _, name = key.rpartition(".")
        try:
            number = float(value)
        except ValueError as exc:
            raise ConfigError(f"--param {item!r}: {value!r} is not a number") from exc
        out.setdefault(symbol or "*", {})[name] = number
    return out


def build_config(args: argparse.Namespace) -> RecordConfig:
    sim = SimConfig(seed=args.seed, rate=args.rate, symbols=parse_symbols(args.symbols))
    if args.param:
        sim = sim.with_overrides(parse_params(args.param))
    duration = parse_duration(args.duration) if args.duration else None
    if not args.realtime and duration is None and args.ticks is None:
        duration = 3600.0
    return RecordConfig(
        path=args.log, sim=sim, ticks=args.ticks, duration_s=duration, realtime=args.realtime,
        clock=args.clock, start_ns=parse_instant(args.start) if args.start else None,
        flush_interval=args.flush_interval, seal_interval=args.seal_interval,
        overwrite=args.overwrite, segment_rows=args.segment_rows)


def build_feed_config(args: argparse.Namespace) -> FeedConfig:
    if args.feed is None:
        raise ConfigError("--feed-url and --rest-url need --feed")
    given = [flag for dest, flag in SIMULATOR_ONLY.items()
             if getattr(args, dest) != args.simulator_defaults[dest]]
    if given:
        raise ConfigError(f"{', '.join(given)} belong(s) to the simulator; --feed records live "
                          "trades: drop them")
    symbols = tuple(part.strip() for part in args.symbols.split(","))
    return FeedConfig(
        path=args.log, venue=args.feed, symbols=symbols, ws_url=args.feed_url,
        rest_url=args.rest_url,
        duration_s=parse_duration(args.duration) if args.duration else None,
        flush_interval=args.flush_interval, seal_interval=args.seal_interval,
        segment_rows=args.segment_rows, silence_timeout=args.silence_timeout,
        overwrite=args.overwrite)


def run_feed(args: argparse.Namespace) -> int:
    config = build_feed_config(args)
    if not args.json:
        print(f"recording {config.venue} {','.join(config.symbols)} into {config.path}; "
              "Ctrl-C to stop", file=sys.stderr)
    result = record_feed(config, report=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result.to_json()))
    elif not result.path.exists():
        print(f"no log written: {config.venue} never acknowledged the subscription")
    else:
        gaps = result.gaps
        print(f"recorded {result.events:,} trades from {config.venue} into {result.path} "
              f"({result.segments} segment(s), {result.seconds:.2f} s, {result.reconnects} "
              f"reconnect(s)); {gaps['gaps']} gap(s): {gaps['expected']} trade(s) skipped, "
              f"{gaps['backfilled']} backfilled, {gaps['missing']} missing"
              + (f"; {result.late} written late" if result.late else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.feed is not None or args.feed_url or args.rest_url:
        return run_feed(args)
    config = build_config(args)
    bar = ProgressBar(f"recording {config.path.name}")
    if config.realtime and not args.json:
        print(f"recording {config.path} in real time; Ctrl-C to stop", file=sys.stderr)
    try:
        result = record(config, progress=bar)
    finally:
        bar.close()
    summary = {"log": str(result.path), "events": result.events, "segments": result.segments,
               "interrupted": result.interrupted, "seconds": round(result.seconds, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"recorded {result.events:,} events into {result.path} "
              f"({result.segments} segment(s), {result.seconds:.2f} s)"
              + (" — stopped by signal" if result.interrupted else ""))
    return 0
