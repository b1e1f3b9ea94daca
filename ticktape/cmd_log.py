"""`ticktape info|verify|recover`: inspect and repair logs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from recorder.batches import can_regenerate, regenerate_and_compare
from recorder.errors import ConfigError
from recorder.log import DEFAULT_SEGMENT_ROWS, Log, compact_log, recover_log, verify_log

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="summarize a log",
                       description="Print a log's events, seq and time span, symbols, size "
                                   "and metadata.")
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(run=run_info)

    p = sub.add_parser("verify", help="check a log against the format's rules",
                       description="Check schema, metadata, seq continuity, ts order and "
                                   "finite positive price and size. Exit 0 if sound, 1 if "
                                   "damaged, 2 if not a log.")
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("--regenerate", action="store_true",
                   help="also re-run the simulator from the log's metadata and compare events")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(run=run_verify)

    p = sub.add_parser("recover", help="seal a log left open by a killed recorder",
                       description="Keep the journal up to its last complete batch, seal it as "
                                   "a segment and remove leftovers. Sealed segments are never "
                                   "rewritten.")
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(run=run_recover)

    p = sub.add_parser("compact", help="merge a finished log's small segments into large ones",
                       description="Rewrite a log directory's segments (e.g. the many small ones "
                                   "a long live recording leaves) as segments of --segment-rows "
                                   "events, atomically: a reader, or a kill at any moment, sees "
                                   "the old segments or the new ones, never a mix.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("log", metavar="LOG", type=Path)
    p.add_argument("--segment-rows", type=int, default=DEFAULT_SEGMENT_ROWS,
                   help="events per segment after compaction")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(run=run_compact)


def run_info(args: argparse.Namespace) -> int:
    info = Log(args.log).info().to_json()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    meta = info["ticktape"]
    lines = [
        f"log        {info['name']}  ({info['path']})",
        f"events     {info['events']:,}  (seq {info['first_seq']}..{info['last_seq']})",
        f"time       {info['first_ts']} .. {info['last_ts']}",
        f"symbols    {', '.join(info['symbols']) or '-'}",
        f"size       {info['bytes']:,} bytes in {info['segments']} segment(s)"
        + (f", {info['bytes'] / info['events']:.2f} bytes/event" if info["events"] else ""),
        f"source     {meta.get('source')}" + (f"  seed {meta['seed']}" if "seed" in meta else "")
        + (f"  mode {meta['mode']}" if "mode" in meta else ""),
    ]
    if info["gaps"]:
        missing = sum(b - a + 1 for g in info["gaps"] for a, b in g["missing"])
        lines.append(f"gaps       {len(info['gaps'])} in trade ids: "
                     f"{sum(g['count'] for g in info['gaps']):,} trade(s) not received live, "
                     f"{sum(g['backfilled'] for g in info['gaps']):,} backfilled, "
                     f"{missing:,} missing")
    if info["live"]:
        lines.append("state      live (a recorder is writing it)")
    print("\n".join(lines))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    report = verify_log(args.log)
    note = ""
    if args.regenerate:
        if can_regenerate(report.metadata):
            report.regenerated = regenerate_and_compare(args.log, report)
        else:
            # Imported and live logs hold real trades: nothing can regenerate them, and that
            # is not damage (exit 0 on an otherwise good log).
            source = (report.metadata or {}).get("source", "unknown")
            note = f"; cannot regenerate: source {source!r} is not the simulator"
    if args.json:
        extra_json = {"cannot_regenerate": note.removeprefix("; cannot regenerate: ")} if note else {}
        print(json.dumps(report.to_json() | extra_json, indent=2))
        return 0 if report.ok else 1
    if report.ok:
        extra = ", regenerated identically" if report.regenerated else note
        print(f"ok: {report.name}: {report.events:,} events in {report.segments} segment(s)"
              f"{extra}")
        for gap in report.missing_gaps:  # the source's gaps: reported, not damage
            spans = ", ".join(f"{a}..{b}" for a, b in gap["missing"])
            print(f"  note: {gap['symbol']}: trade ids {spans} missing (the recorder could not "
                  f"backfill them{': ' + gap['error'] if gap.get('error') else ''})")
    else:
        print(f"damaged: {report.name}: {len(report.problems)} problem(s)")
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.ok else 1


def run_recover(args: argparse.Namespace) -> int:
    report = recover_log(args.log)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif report.sealed or report.removed_files:
        print(f"recovered {report.name}: {report.recovered_events:,} events sealed into "
              f"{report.sealed or 'no new segment'}; removed {', '.join(report.removed_files)}"
              + (f"; dropped a torn tail of {report.dropped_bytes} bytes"
                 if report.dropped_bytes else ""))
    else:
        print(f"{report.name}: nothing to recover")
    return 0


def run_compact(args: argparse.Namespace) -> int:
    if args.segment_rows < 1:
        raise ConfigError(f"--segment-rows must be >= 1, got {args.segment_rows}")
    report = compact_log(args.log, segment_rows=args.segment_rows)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif report.compacted:
        print(f"compacted {report.name}: {report.events:,} events, {report.segments_before} "
              f"segment(s) -> {report.segments_after}, {report.bytes_before:,} -> "
              f"{report.bytes_after:,} bytes")
    else:
        print(f"{report.name}: already compact ({report.segments_before} segment(s))")
    return 0
