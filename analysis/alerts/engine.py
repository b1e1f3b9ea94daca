"""The alert engine: rules evaluated per symbol over consecutive batches of one log.

    engine = AlertEngine(config, log.name)
    for batch in log.iter_batches(columns=AlertEngine.columns(log.columns)):
        for alert in engine.update(batch):
            ...

Batches must be consecutive and start at seq 0 (a stream that starts later calls
`warm_up(log, seq)` first: it runs the rules over [0, seq) and drops their alerts). State is
per symbol and carried across batches, and every rule is exact under re-batching, so any
batching of the same log gives the same alerts: `ticktape alerts`, the report and a replay
all agree. Alerts of one batch are ordered by seq, then by rule (RULE_CLASSES order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.alerts.config import AlertConfig, RuleConfig, SilenceRule
from analysis.alerts.errors import AlertError
from analysis.alerts.model import Alert
from analysis.alerts.rules import Rule, SymbolSlice, make_rule
from analysis.streaming import symbol_codes
from recorder.log import Log

__all__ = ["AlertEngine", "count_by_rule", "evaluate_log"]

_BASE_COLUMNS = ["seq", "ts", "symbol", "price", "size"]
_MAX_ID = 10**18  # trade ids at or above are skipped (and so never overflow int64)
_LOG_KEY = ""  # cooldown key of a rule evaluated over the whole log (silence, scope "log")


class AlertEngine:
    """Feed a log's batches in seq order from 0; each `update` returns that batch's alerts."""

    def __init__(self, config: AlertConfig, log_name: str) -> None:
        self.config = config
        self.log_name = log_name
        self._rules: list[tuple[int, Rule[Any]]] = []
        self._log_rules: list[tuple[int, Rule[Any]]] = []  # evaluated over all symbols at once
        for order, rule_config in enumerate(config.rules):
            if not rule_config.enabled:
                continue
            target = self._log_rules if _whole_log(rule_config) else self._rules
            target.append((order, make_rule(rule_config)))
        self._states: dict[tuple[str, str], Any] = {}  # (rule, symbol) -> rule state
        self._next_allowed: dict[tuple[str, str], int] = {}  # cooldown: earliest next ts
        self._per_symbol: dict[str, list[tuple[int, Rule[Any]]]] = {}
        self._next_seq = 0
        self._trade_ids: bool | None = None  # whether batches carry trade_id (fixed by the 1st)
        self._wants_ids = any(r.name == "trade_id_gap" for _, r in self._rules)

    @staticmethod
    def columns(log_columns: list[str]) -> list[str]:
        """The columns to read from a log with these columns (trade_id when it has one)."""
        return _BASE_COLUMNS + (["trade_id"] if "trade_id" in log_columns else [])

    @property
    def next_seq(self) -> int:
        """The seq the next batch must start at."""
        return self._next_seq

    def warm_up(self, log: Log, seq: int, batch_rows: int = 262_144) -> None:
        """Run the rules over events [next_seq, seq) of `log`, dropping their alerts, so the
        next `update` (a batch starting at seq) gives what a pass from 0 would. Costs one
        pass over those events (~the `ticktape alerts` rate, docs/analysis.md)."""
        if seq < self._next_seq:
            raise AlertError(f"cannot warm up to seq {seq}: already at {self._next_seq}")
        columns = self.columns(log.columns)
        for batch in log.iter_batches(from_seq=self._next_seq, batch_rows=batch_rows,
                                      columns=columns, dictionary_symbols=True):
            if self._next_seq + batch.num_rows > seq:
                batch = batch.slice(0, seq - self._next_seq)
            self.update(batch)
            if self._next_seq >= seq:
                break
        if self._next_seq != seq:
            raise AlertError(f"cannot warm up to seq {seq}: log {log.name} holds "
                             f"{self._next_seq} events")

    def update(self, batch: pa.RecordBatch, *,
               codes: tuple[np.ndarray, list[str]] | None = None) -> list[Alert]:
        """The alerts raised by this batch's events (the batch starts at `next_seq`).
        `codes`: the batch's `symbol_codes`, when the caller has them already."""
        rows = batch.num_rows
        if rows == 0:
            return []
        first_seq = int(batch.column("seq")[0].as_py())
        if first_seq != self._next_seq:
            raise AlertError(f"alert engine for {self.log_name}: batch starts at seq "
                             f"{first_seq}, expected {self._next_seq} (warm_up first)")
        has_ids = "trade_id" in batch.schema.names
        if self._trade_ids is None:
            self._trade_ids = has_ids
        elif has_ids != self._trade_ids:
            raise AlertError(f"alert engine for {self.log_name}: trade_id column "
                             f"{'appeared' if has_ids else 'disappeared'} at seq {first_seq}")
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        price = batch.column("price").to_numpy()
        size = batch.column("size").to_numpy()
        symbols, names = codes if codes is not None else symbol_codes(batch.column("symbol"))
        ids, ids_ok = (_numeric_ids(batch.column("trade_id")) if has_ids and self._wants_ids
                       else (None, None))
        found: list[tuple[int, int, Alert]] = []

        for order, rule in self._log_rules:
            cfg = rule.config
            allowed = [i for i, name in enumerate(names) if cfg.applies_to(name)]
            if not allowed:
                continue
            idx = (None if len(allowed) == len(names)
                   else np.flatnonzero(np.isin(symbols, allowed)))
            piece = _slice(idx, ts, price, size, ids, ids_ok)
            self._collect(found, order, rule, _LOG_KEY, piece, idx, first_seq, (symbols, names))

        for code, name in enumerate(names):
            rules = self._per_symbol.get(name)
            if rules is None:
                rules = self._per_symbol[name] = [
                    (order, rule) for order, rule in self._rules if rule.config.applies_to(name)]
            if not rules:
                continue
            idx = None if len(names) == 1 else np.flatnonzero(symbols == code)
            piece = _slice(idx, ts, price, size, ids, ids_ok)
            for order, rule in rules:
                self._collect(found, order, rule, name, piece, idx, first_seq, name)
        self._next_seq = first_seq + rows
        found.sort(key=lambda f: (f[0], f[1]))
        return [alert for _, _, alert in found]

    def _collect(self, found: list[tuple[int, int, Alert]], order: int, rule: Rule[Any],
                 key: str, piece: SymbolSlice, idx: np.ndarray | None, first_seq: int,
                 symbol: str | tuple[np.ndarray, list[str]]) -> None:
        """Evaluate one rule on one slice; `symbol` is the slice's symbol, or the batch's
        (codes, names) for a rule over all symbols."""
        state_key = (rule.name, key)
        state = self._states.get(state_key)
        if state is None:
            state = self._states[state_key] = rule.new_state()
        hits = rule.evaluate(state, piece)
        if hits.rows.size == 0:
            return
        for k in self._cooldown(state_key, rule.config, piece.ts[hits.rows]):
            row = int(hits.rows[k]) if idx is None else int(idx[hits.rows[k]])
            name = symbol if isinstance(symbol, str) else symbol[1][int(symbol[0][row])]
            found.append((row, order, Alert(
                log=self.log_name, seq=first_seq + row, ts=int(piece.ts[hits.rows[k]]),
                symbol=name, rule=rule.name, value=float(hits.value[k]),
                threshold=float(hits.threshold[k]),
                message=rule.message(name, hits, k, piece))))

    def _cooldown(self, key: tuple[str, str], config: RuleConfig, ts: np.ndarray
                  ) -> list[int]:
        """Candidates that become alerts: each one blocks the rule (for this symbol) until
        its ts + cooldown. Costs a bisection per alert, not a step per candidate."""
        cooldown = config.cooldown_ns
        start = int(np.searchsorted(ts, self._next_allowed.get(key, -(2**63)), side="left"))
        if start >= len(ts):
            return []
        if cooldown == 0:
            kept = list(range(start, len(ts)))
        else:
            kept = []
            pos = start
            while pos < len(ts):
                kept.append(pos)
                pos = int(np.searchsorted(ts, int(ts[pos]) + cooldown, side="left"))
        self._next_allowed[key] = int(ts[kept[-1]]) + cooldown
        return kept


def _whole_log(config: RuleConfig) -> bool:
    return isinstance(config, SilenceRule) and config.scope == "log"


def _slice(idx: np.ndarray | None, ts: np.ndarray, price: np.ndarray, size: np.ndarray,
           ids: np.ndarray | None, ids_ok: np.ndarray | None) -> SymbolSlice:
    if idx is None:
        return SymbolSlice(ts, price, size, ids, ids_ok)
    return SymbolSlice(ts[idx], price[idx], size[idx],
                       None if ids is None else ids[idx],
                       None if ids_ok is None else ids_ok[idx])


def _numeric_ids(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """trade_id as int64, with a mask of the rows whose id counts: ASCII decimal digits with
    a value below 10**18. Other rows (null, letters, signs, longer) are skipped by the rule.
    The answer per row does not depend on the rest of the batch."""
    if pa.types.is_integer(column.type):
        values = column.fill_null(-1).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return values, (values >= 0) & (values < _MAX_ID)
    text = column.cast(pa.string())
    if _all_digits(text):  # the common case: every id is a plain number
        values = pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False)
        return values, values < _MAX_ID
    digits = pc.fill_null(pc.ascii_is_decimal(text), False)
    short = pc.less_equal(pc.utf8_length(pc.utf8_ltrim(text, "0")), 18)
    ok = pc.fill_null(pc.and_(digits, short), False)
    values = pc.cast(pc.if_else(ok, text, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    return values, ok.to_numpy(zero_copy_only=False)


def _all_digits(text: pa.Array) -> bool:
    """Whether every row is non-null and 1 to 18 ASCII digits (so it fits int64): a pass
    over the bytes, not a check per row."""
    if text.null_count or len(text) == 0:
        return False
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset: text.offset + len(text) + 1]
    lengths = np.diff(offsets)
    if lengths.min() < 1 or lengths.max() > 18:
        return False
    data = np.frombuffer(text.buffers()[2], np.uint8)[offsets[0]: offsets[-1]]
    return bool(np.all(data - np.uint8(48) < 10))  # wraps around below "0"


def evaluate_log(config: AlertConfig, log: Log, *, batch_rows: int = 262_144,
                 progress: Callable[[int, int | None], None] | None = None) -> Iterator[Alert]:
    """Every alert of the log, in order (one pass, batch by batch)."""
    engine = AlertEngine(config, log.name)
    done = 0
    for batch in log.iter_batches(batch_rows=batch_rows, columns=AlertEngine.columns(log.columns),
                                  dictionary_symbols=True):
        yield from engine.update(batch)
        done += batch.num_rows
        if progress:
            progress(done, log.events)


def count_by_rule(alerts: list[Alert], config: AlertConfig) -> dict[str, int]:
    """Alerts per enabled rule (zeros included), in rule order."""
    counts = {r.name: 0 for r in config.enabled}
    for alert in alerts:
        counts[alert.rule] += 1
    return counts
