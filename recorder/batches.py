"""Simulator events as log batches: the one mapping used to record and to regenerate a log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recorder.config import SimConfig, parse_instant
from recorder.errors import ConfigError
from recorder.log import Log, VerifyReport, iso_ns, make_batch
from recorder.log.schema import SIDES
from recorder.simulator import BLOCK_EVENTS, Events, Simulator

__all__ = [
    "FAST_CHUNK",
    "BatchMaker",
    "can_regenerate",
    "metadata_for",
    "regenerate_and_compare",
    "regenerate_batches",
]

FAST_CHUNK = 1_000_000


def metadata_for(sim: SimConfig, *, start_ns: int, clock: str, mode: str) -> dict[str, Any]:
    """The log's `ticktape` metadata: enough to regenerate every event (docs/log-format.md)."""
    return {
        "source": "simulator",
        "seed": sim.seed,
        "simulator": {**sim.to_json(), "block_events": BLOCK_EVENTS},
        "start": iso_ns(start_ns),
        "clock": clock,
        "mode": mode,
    }


class BatchMaker:
    """Turns simulator events into log batches, numbering seq on."""

    def __init__(self, sim: SimConfig, start_ns: int) -> None:
        self._symbols = pa.array([s.symbol for s in sim.symbols])
        self._sides = pa.array(SIDES)
        self._start_ns = start_ns
        self.next_seq = 0

    def __call__(self, events: Events, ts_ns: np.ndarray | None = None) -> pa.RecordBatch:
        n = len(events)
        seq = np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)
        self.next_seq += n
        ts = self._start_ns + events.offset_ns if ts_ns is None else ts_ns
        symbol = pa.DictionaryArray.from_arrays(pa.array(events.symbol_index), self._symbols)
        side = pa.DictionaryArray.from_arrays(pa.array(events.side_index), self._sides)
        return make_batch(seq, ts, symbol, events.price, events.size, side)


def regenerate_batches(metadata: dict[str, Any], events: int) -> Iterator[pa.RecordBatch]:
    """The batches a simulated log's own metadata produces (for `verify --regenerate`)."""
    params = metadata["simulator"]
    if params.get("block_events", BLOCK_EVENTS) != BLOCK_EVENTS:
        raise ConfigError("log was generated with another block size; this ticktape cannot "
                          "regenerate it")
    sim_config = SimConfig.from_json(params)
    simulator = Simulator(sim_config)
    make = BatchMaker(sim_config, parse_instant(metadata["start"]))
    left = events
    while left > 0:
        chunk = simulator.take(min(left, FAST_CHUNK))
        left -= len(chunk)
        yield make(chunk)


def can_regenerate(metadata: dict[str, Any] | None) -> bool:
    """Only a simulated log carries what regenerates it (seed and every parameter)."""
    return bool(metadata) and metadata is not None and metadata.get("source") == "simulator"


def regenerate_and_compare(root: Path, report: VerifyReport) -> bool:
    """`verify --regenerate`: re-run the simulator from the log's own metadata and compare
    every event; a difference is added to the report. False when they differ (or the log has
    other problems); call only when `can_regenerate(report.metadata)`."""
    metadata = report.metadata
    assert metadata is not None and can_regenerate(metadata)
    if report.problems:
        return False
    log = Log(root)
    compare_ts = metadata.get("clock", "sim") == "sim"
    fresh = regenerate_batches(metadata, log.events)
    pending: pa.Table | None = None
    seq = 0
    for batch in log.iter_batches(batch_rows=262_144):
        need = batch.num_rows
        parts = [] if pending is None else [pending]
        have = 0 if pending is None else pending.num_rows
        while have < need:
            nxt = next(fresh)
            parts.append(pa.Table.from_batches([nxt]))
            have += nxt.num_rows
        table = pa.concat_tables(parts).combine_chunks()
        want, pending = table.slice(0, need), table.slice(need)
        got = pa.Table.from_batches([batch])
        for col in ("symbol", "price", "size", "side", *(("ts",) if compare_ts else ())):
            if not got.column(col).equals(want.column(col)):
                a = got.column(col).to_numpy(zero_copy_only=False)
                b = want.column(col).to_numpy(zero_copy_only=False)
                first_bad = int(np.argmax(a != b))
                report.problem(f"--regenerate: {col} differs from the simulator at seq "
                               f"{seq + first_bad}")
                return False
        seq += need
    return True
