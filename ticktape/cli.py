"""Entry point: parse argv, call the command, turn ticktape errors into one line and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recorder.errors import TicktapeError
from ticktape import (
    __version__,
    cmd_alerts,
    cmd_analysis,
    cmd_import,
    cmd_log,
    cmd_record,
    cmd_replay,
    cmd_watch,
)

__all__ = ["build_parser", "main"]

# Each command module contributes `register(subparsers)`; the parser's `run` does the work.
COMMAND_MODULES = [cmd_record, cmd_log, cmd_import, cmd_replay, cmd_watch, cmd_analysis, cmd_alerts]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticktape",
        description="Record price ticks into Parquet event logs and replay them to live clients.",
        epilog="Run `ticktape COMMAND --help` for a command's options. The full reference "
               "is the docs/ folder of ticktape's source (docs/README.md).",
    )
    parser.add_argument("--version", action="version", version=f"ticktape {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except TicktapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
