"""The Alert record: what a rule raised, at which event, as the CLI, Parquet and Socket.IO carry it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from recorder.log import iso_ns

__all__ = ["ALERT_SCHEMA", "Alert", "alerts_table"]

# Parquet columns of `ticktape alerts -o` (the JSON keys, ts as a timestamp).
ALERT_SCHEMA = pa.schema([
    pa.field("log", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("rule", pa.string(), nullable=False),
    pa.field("value", pa.float64(), nullable=False),
    pa.field("threshold", pa.float64(), nullable=False),
    pa.field("message", pa.string(), nullable=False),
])


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: the event (seq, ts in ns) that raised it, the rule, the measured value and
    the threshold it met, and a one-line message. Same log and rules -> same alerts."""

    log: str
    seq: int
    ts: int  # ns since the epoch, the event's time
    symbol: str
    rule: str
    value: float
    threshold: float
    message: str

    def to_json(self) -> dict[str, Any]:
        """The wire form (CLI --json, Socket.IO `alert`): ts as ISO 8601, keys in this order."""
        return {"log": self.log, "seq": self.seq, "ts": iso_ns(self.ts), "symbol": self.symbol,
                "rule": self.rule, "value": self.value, "threshold": self.threshold,
                "message": self.message}

    def line(self) -> str:
        """One human-readable line (the CLI's text output)."""
        return f"{iso_ns(self.ts)}  seq {self.seq}  {self.symbol}  {self.rule}: {self.message}"


def alerts_table(alerts: list[Alert], metadata: dict[str, str] | None = None) -> pa.Table:
    """The alerts as a table with ALERT_SCHEMA (empty but typed when there are none)."""
    columns = {name: [getattr(a, name) for a in alerts] for name in ALERT_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=ALERT_SCHEMA.with_metadata(metadata or {}))
