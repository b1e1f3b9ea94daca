"""`python -m bench [NAME ...] [--quick]`: run the benchmarks (all by default)."""

from __future__ import annotations

import argparse
import importlib

SUITES = {"record": "bench.record_bench", "analysis": "bench.analysis_bench",
          "replay": "bench.replay_bench", "follow": "bench.follow_bench",
          "alerts": "bench.alerts_bench", "import": "bench.import_bench",
          "fleet": "bench.fleet_bench", "alerts-replay": "bench.alerts_replay_bench"}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"suites to run (default: all): {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    for name in args.names or list(SUITES):
        importlib.import_module(SUITES[name]).run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
