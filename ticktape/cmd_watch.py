"""`ticktape watch`: follow a replay from the terminal, and optionally record it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from replayer.errors import BadRequest
from replayer.protocol import parse_speed
from ticktape.watch import WatchConfig, watch

__all__ = ["register"]


def _speed(text: str) -> float | str:
    try:
        value: float | str = "max" if text == "max" else float(text)
        parse_speed(value)
    except (ValueError, BadRequest) as exc:
        raise argparse.ArgumentTypeError(f"speed must be within [0.01, 10000] or max, "
                                         f"got {text!r}") from exc
    return value


def register(sub: Any) -> None:
    p = sub.add_parser(
        "watch", help="print (and optionally record) a replay from a server",
        description="Subscribe to a log on a running `ticktape replay` and print its ticks; "
                    "reconnects and resumes without gaps. --record writes what arrives as a log.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("url", metavar="URL", help="server, e.g. http://127.0.0.1:8080")
    p.add_argument("--log", required=True, metavar="NAME", help="log name on the server")
    p.add_argument("--speed", type=_speed, default=1.0, help="0.01..10000 or max")
    p.add_argument("--from-seq", type=int, default=0, metavar="N")
    p.add_argument("--symbols", help="comma-separated symbols to receive")
    p.add_argument("--sma", type=int, default=5, help="SMA window of the sma column")
    p.add_argument("--encoding", choices=["json", "arrow"], default="json")
    p.add_argument("--record", type=Path, metavar="OUT", help="write what arrives as a log")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="one JSON object per tick per line")
    p.add_argument("--quiet", action="store_true", help="print nothing per tick")
    p.add_argument("--token", help="token the server requires (or TICKTAPE_TOKEN)")
    p.add_argument("--reconnect-timeout", type=float, default=30.0, metavar="S",
                   help="give up when the server stays unreachable this long")
    p.set_defaults(run=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    config = WatchConfig(
        url=args.url.rstrip("/"), log=args.log, speed=args.speed, from_seq=args.from_seq,
        symbols=tuple(args.symbols.split(",")) if args.symbols else None, sma=args.sma,
        encoding=args.encoding, record=args.record, overwrite=args.overwrite,
        json_lines=args.json, quiet=args.quiet,
        token=args.token if args.token is not None else os.environ.get("TICKTAPE_TOKEN") or None,
        reconnect_timeout=args.reconnect_timeout)
    received = asyncio.run(watch(config))
    if args.record is not None:
        print(f"recorded {received:,} events into {args.record}", file=sys.stderr)
    return 0
