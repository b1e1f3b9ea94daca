"""Trade-id continuity per symbol: duplicates dropped, skipped ids turned into gap records.

All three venues number trades sequentially per symbol (Binance `t`, Coinbase `trade_id`,
Kraken `trade_id`), so an id that jumps by more than one means trades were missed: dropped by
the feed, or traded while the connection was down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Gap", "GapTracker", "ranges"]

Verdict = Literal["new", "duplicate", "gap"]


@dataclass
class Gap:
    """Trades first..last (inclusive) of one symbol were not received live."""

    symbol: str
    first: int
    last: int
    cause: str  # "reconnect" (the connection was down) or "skipped" (the feed skipped ids)
    backfilled: int = 0
    missing: list[list[int]] = field(default_factory=list)
    too_late: int = 0  # fetched, but older than what was already written (see docs/feeds.md)
    error: str | None = None

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def missing_count(self) -> int:
        return sum(b - a + 1 for a, b in self.missing)

    def resolve(self, placed: set[int], too_late: int, error: str | None) -> None:
        """Record the outcome of the backfill: which ids were written, why others were not."""
        self.backfilled = len(placed)
        self.too_late = too_late
        self.error = error
        self.missing = ranges(i for i in range(self.first, self.last + 1) if i not in placed)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"symbol": self.symbol, "first_id": self.first,
                               "last_id": self.last, "count": self.count, "cause": self.cause,
                               "backfilled": self.backfilled, "missing": self.missing}
        if self.too_late:
            out["too_late"] = self.too_late
        if self.error:
            out["error"] = self.error
        return out


def ranges(ids: Any) -> list[list[int]]:
    """Sorted ids -> [[first, last], ...] runs of consecutive ids."""
    out: list[list[int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


class GapTracker:
    """The last trade id accepted per symbol, and the gaps found so far."""

    def __init__(self, symbols: list[str]) -> None:
        self.last_id: dict[str, int | None] = dict.fromkeys(symbols)
        self.last_ts: dict[str, int] = dict.fromkeys(symbols, 0)
        self.gaps: list[Gap] = []

    def check(self, symbol: str, trade_id: int, ts_ns: int, cause: str) -> tuple[Verdict, Gap | None]:
        """Accept trade_id as the symbol's newest: 'new', 'duplicate' (already had it, drop it)
        or 'gap' with the Gap of the ids skipped before it."""
        last = self.last_id[symbol]
        if last is not None and trade_id <= last:
            return "duplicate", None
        self.last_id[symbol] = trade_id
        self.last_ts[symbol] = ts_ns
        if last is None or trade_id == last + 1:
            return "new", None
        gap = Gap(symbol, last + 1, trade_id - 1, cause)
        self.gaps.append(gap)
        return "gap", gap

    def summary(self) -> dict[str, int]:
        return {"gaps": len(self.gaps), "expected": sum(g.count for g in self.gaps),
                "backfilled": sum(g.backfilled for g in self.gaps),
                "missing": sum(g.missing_count for g in self.gaps)}
