"""`ticktape replay|demo`: serve logs, run the demo (`watch` is in cmd_watch)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from analysis.alerts import load_rules
from recorder.config import SimConfig, parse_duration, parse_symbols
from recorder.errors import ConfigError
from recorder.log import Log
from recorder.record import RecordConfig, record
from replayer.app import STATE, make_app, token_from_env
from replayer.catalog import Catalog
from replayer.config import ServerConfig
from replayer.workers import run_workers, watch_supervisor
from ticktape.progress import ProgressBar

__all__ = ["register", "serve"]

DEMO_LOG = "demo-btc"


def _server_options(p: argparse.ArgumentParser, port: int = 8080) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=port, help="port (0: any free port)")
    p.add_argument("--token", help="require this token from clients (or TICKTAPE_TOKEN)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; * for any)")
    p.add_argument("--window", type=int, default=4,
                   help="batches in flight per client before its stream waits")
    p.add_argument("--max-batch", type=int, default=5_000, help="ticks per batch at most")
    p.add_argument("--rules", type=Path, metavar="FILE",
                   help="alert rules (TOML, as `ticktape alerts --rules`) that subscribers "
                        "with \"alerts\" receive (default: the documented defaults)")
    p.add_argument("--alert-webhook", action="append", default=[], metavar="URL",
                   help="POST every alert the server's streams raise to URL as JSON "
                        "(repeatable; retried, never slowing a stream: docs/operations.md)")
    p.add_argument("--alert-webhook-timeout", type=float, default=5.0, metavar="S",
                   help="seconds per webhook request before it counts as failed")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="serve logs to Socket.IO clients and the live dashboard",
        description="Serve PATH alone if it is a .parquet log file or a directory holding "
                    "seg-*.parquet segments (or a journal); otherwise PATH is a folder of logs: "
                    "every log directory and single-file .parquet log directly under it, "
                    "rescanned as logs appear. Clients subscribe over Socket.IO "
                    "(docs/protocol.md); the dashboard is at /.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", metavar="PATH", type=Path)
    _server_options(p)
    p.add_argument("--redis", metavar="URL",
                   help="join the fleet sharing this Redis (or Valkey) URL, e.g. "
                        "redis://cache:6379/0: broadcasts play on one process of the fleet and "
                        "reach clients on all of them (docs/operations.md)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="serve from N processes on one port (N > 1 needs --redis)")
    # Internal: how the --workers supervisor starts a worker (SO_REUSEPORT on the port).
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run_replay)

    p = sub.add_parser(
        "demo", help="record a seeded demo session (if absent) and serve it with the dashboard",
        description="Records data/demo-btc (seed 42, BTC-USD and ETH-USD, 6 simulated hours) "
                    "the first time, then serves data/ and prints the dashboard's URL. "
                    "Ctrl-C stops.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data"), help="folder of logs to serve")
    _server_options(p)
    p.set_defaults(run=run_demo)


def _server_config(args: argparse.Namespace, path: Path) -> ServerConfig:
    return ServerConfig(path=path, host=args.host, port=args.port,
                        token=token_from_env(args.token), cors_origins=tuple(args.cors_origin),
                        window=args.window, max_batch=args.max_batch,
                        redis_url=getattr(args, "redis", None),
                        reuse_port=getattr(args, "reuse_port", False),
                        alert_rules=load_rules(args.rules),
                        alert_webhooks=tuple(args.alert_webhook),
                        webhook_timeout=args.alert_webhook_timeout)


async def serve(config: ServerConfig, banner: str = "serving") -> None:
    """Run the server until SIGINT/SIGTERM, then end every stream cleanly."""
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_port=config.reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: "
                          f"{exc.strerror or exc}") from exc
    # Signal handlers first: once the URL is printed, Ctrl-C must stop the server cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A --workers worker stops if its supervisor vanishes. The task reference is held for
    # its lifetime (it ends by itself, or is cancelled below).
    orphaned = asyncio.create_task(watch_supervisor(stop))
    port = runner.addresses[0][1]
    names = app[STATE].catalog.names
    print(f"{banner} {len(names)} log(s) ({', '.join(names) or 'none yet'}) at "
          f"http://{config.host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        await stop.wait()
    finally:
        orphaned.cancel()
        await runner.cleanup()
    print("stopped", file=sys.stderr, flush=True)


def run_replay(args: argparse.Namespace) -> int:
    config = _server_config(args, args.path)  # validated before any worker starts
    if args.workers != 1:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        if config.redis_url is None:
            raise ConfigError(f"--workers {args.workers} needs --redis URL: the workers share "
                              "broadcasts through Redis")
        Catalog(config.path)  # a path that is not a log is a usage error here, not N times
        if config.token is not None:  # to the workers through the environment, not argv (ps)
            os.environ["TICKTAPE_TOKEN"] = config.token
        return run_workers(_worker_args(args), count=args.workers, host=config.host,
                           port=config.port, banner="serving")
    asyncio.run(serve(config))
    return 0


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The worker's command line: the same options, without --workers and the port (the
    supervisor adds --port and --reuse-port), and without the token (in the environment)."""
    out = [str(args.path), "--host", args.host, "--window", str(args.window),
           "--max-batch", str(args.max_batch), "--redis", args.redis]
    for origin in args.cors_origin:
        out += ["--cors-origin", origin]
    if args.rules is not None:
        out += ["--rules", str(args.rules)]
    for url in args.alert_webhook:
        out += ["--alert-webhook", url]
    out += ["--alert-webhook-timeout", str(args.alert_webhook_timeout)]
    return out


def run_demo(args: argparse.Namespace) -> int:
    data: Path = args.data
    data.mkdir(parents=True, exist_ok=True)
    log = data / DEMO_LOG
    if not log.exists():
        bar = ProgressBar(f"recording {log}")
        sim = SimConfig(seed=42, rate=20.0, symbols=parse_symbols("BTC-USD,ETH-USD"))
        try:
            result = record(RecordConfig(path=log, sim=sim, duration_s=parse_duration("6h")),
                            progress=bar)
        finally:
            bar.close()
        print(f"recorded {result.events:,} events into {log}", flush=True)
    else:
        info = Log(log).info()
        print(f"using {log} ({info.events:,} events)", flush=True)
    asyncio.run(serve(_server_config(args, data), banner="demo: serving"))
    return 0
