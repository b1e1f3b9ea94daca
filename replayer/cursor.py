"""A log read from a seq on, a chunk at a time, filtered by symbol, with the live SMA and alerts.

Everything here runs in a worker thread (Parquet decoding, SMA, alert rules): the event loop
only ever awaits a `Cursor` method through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.alerts import Alert, AlertConfig, AlertEngine
from analysis.streaming import IndicatorSpec, StreamingIndicators, symbol_codes
from recorder.log import SCHEMA, Log
from replayer.encoding import JsonColumns

__all__ = ["Chunk", "Cursor"]

_NO_SEQS = np.empty(0, dtype=np.int64)


@dataclass
class Chunk:
    """Rows read at once: the batch, its ts as int64 ns, its SMA, and (JSON) its columns."""

    batch: pa.RecordBatch
    ts: np.ndarray
    sma: np.ndarray
    json: JsonColumns | None = None  # prepared only when a JSON client will receive it
    # The alerts the chunk's events raised (of its symbols), ordered by seq, and their seqs.
    alerts: list[Alert] = field(default_factory=list)
    alert_seqs: np.ndarray = field(default_factory=lambda: _NO_SEQS)

    def __len__(self) -> int:
        return self.batch.num_rows


class Cursor:
    """Reads the log from a seq on, filtered by symbol, with the live SMA (worker thread).

    With `alerts` (the rules to run), every chunk also carries the alerts its events raised:
    the rules see every event of the log, whatever the symbol filter (as `ticktape alerts`
    does), and a chunk keeps the alerts of its own symbols. Starting past seq 0 warms the
    rules up over [0, start) first: one pass of them over those events."""

    def __init__(self, log: Log, start: int, symbols: tuple[str, ...] | None, sma: int,
                 read_rows: int, prepare_json: bool, alerts: AlertConfig | None = None,
                 carried: tuple[str, ...] = ()) -> None:
        self.log, self.symbols, self.sma, self.read_rows = log, symbols, sma, read_rows
        self.prepare_json = prepare_json
        self._wanted = pa.array(symbols) if symbols else None
        self.engine = StreamingIndicators(IndicatorSpec(sma=(sma,)))
        self.next_seq = start
        self._warm_up(start)
        self.alerts: AlertEngine | None = None
        # What chunks hold: the required columns, then the carried ones (trade_id, venue).
        self._kept = [*SCHEMA.names, *carried]
        self._columns: list[str] | None = self._kept if carried else None  # None: required
        self._alert_columns: list[str] = []
        if alerts is not None:
            self.alerts = AlertEngine(alerts, log.name)
            wanted = AlertEngine.columns(log.columns)
            self._alert_columns = wanted
            extra = [c for c in wanted if c not in self._kept]
            if extra:  # trade_id: read it for the rules
                self._columns = self._kept + extra
            self.alerts.warm_up(log, start)
        self._it = log.iter_batches(start, read_rows, columns=self._columns)

    def _filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._wanted is None:
            return batch
        return batch.filter(pc.is_in(batch.column(2), value_set=self._wanted))

    def _warm_up(self, start: int) -> None:
        """Feed the SMA the prices just before `start`, so values equal a full replay's."""
        if start == 0 or self.sma <= 1:
            return
        symbols = set(self.symbols or self.log.info().symbols)
        span = (self.sma - 1) * 4 * max(1, len(symbols))
        while True:
            lo = max(0, start - span)
            rows = [self._filter(b) for b in self._before(lo, start)]
            table = pa.Table.from_batches(rows, schema=rows[0].schema if rows else None) \
                if rows else None
            if table is not None:
                table = table.filter(pc.less(table.column(0), start))
            counts = {} if table is None else dict(zip(
                *np.unique(table.column(2).to_numpy(zero_copy_only=False), return_counts=True),
                strict=False))
            if lo == 0 or all(counts.get(s, 0) >= self.sma - 1 for s in symbols):
                break
            span *= 4
        if table is not None and table.num_rows:
            table = table.combine_chunks()
            self.engine.update(table.column(2).chunk(0), table.column(1).cast(pa.int64())
                               .to_numpy(), table.column(3).to_numpy())

    def _before(self, lo: int, start: int) -> Iterator[pa.RecordBatch]:
        """The batches holding seqs [lo, start): stops at the one holding start - 1, without
        reading on (the part from `start` on may be where a log is damaged)."""
        for batch in self.log.iter_batches(lo, self.read_rows):
            if batch.column(0)[0].as_py() >= start:
                return
            yield batch
            if batch.column(0)[-1].as_py() >= start - 1:
                return

    def reopen(self) -> None:
        """Continue from where reading stopped, over a refreshed log (follow mode)."""
        self._it = self.log.iter_batches(self.next_seq, self.read_rows, columns=self._columns)

    def read(self) -> Chunk | None:
        """The next non-empty chunk, or None at the end of the log's current snapshot."""
        for batch in self._it:
            self.next_seq = int(batch.column(0)[-1].as_py()) + 1
            raised: list[Alert] = []
            codes = None
            if self.alerts is not None:
                codes = symbol_codes(batch.column(2))  # the whole batch's: the rules see all
                raised = self.alerts.update(batch.select(self._alert_columns), codes=codes)
                if self._columns is not None and len(self._columns) > len(self._kept):
                    batch = batch.select(self._kept)
                if self.symbols:
                    raised = [a for a in raised if a.symbol in self.symbols]
                    codes = None  # the filtered batch's codes differ
            batch = self._filter(batch)
            if batch.num_rows == 0:
                continue
            ts = batch.column(1).cast(pa.int64()).to_numpy()
            if codes is None:  # once, for the SMA and the JSON encoder
                codes = symbol_codes(batch.column(2))
            sma = self.engine.update(batch.column(2), ts, batch.column(3).to_numpy(), codes=codes)
            prepared = JsonColumns(self.log.name, batch, ts, codes) if self.prepare_json else None
            if not raised:
                return Chunk(batch, ts, sma[f"sma_{self.sma}"], prepared)
            return Chunk(batch, ts, sma[f"sma_{self.sma}"], prepared, raised,
                         np.fromiter((a.seq for a in raised), np.int64, len(raised)))
        return None
