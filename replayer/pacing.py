"""Replay-clock arithmetic (pure): emit times from one anchor, never from summed sleeps.

The replay clock maps event time to wall time as `wall = wall0 + (ts - ts0) / speed`.
Changing speed, pausing, resuming and seeking only move the anchor, so the clock never
jumps and errors never accumulate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_SPEED", "MIN_SPEED", "ReplayClock"]

MIN_SPEED = 0.01
MAX_SPEED = 10_000.0
NS = 1_000_000_000


@dataclass
class ReplayClock:
    """speed None means "max": no pacing, events are due as soon as they are read."""

    speed: float | None
    wall0: float = 0.0  # loop time (s) at the anchor
    ts0: int = 0  # event time (ns) at the anchor
    paused_at_ts: int | None = None

    def anchor(self, wall: float, ts: int) -> None:
        self.wall0, self.ts0 = wall, ts

    def now_ts(self, wall: float) -> int:
        """The replay clock: the event time that is due at wall time `wall`."""
        if self.paused_at_ts is not None:
            return self.paused_at_ts
        if self.speed is None:
            return self.ts0
        return self.ts0 + int((wall - self.wall0) * self.speed * NS)

    def due(self, ts: int) -> float:
        """Wall time at which an event of time ts is due (-inf at max speed)."""
        if self.speed is None:
            return float("-inf")
        return self.wall0 + (ts - self.ts0) / (self.speed * NS)

    def set_speed(self, speed: float | None, wall: float) -> None:
        """Re-anchor at the current replay time, so the clock continues without a jump."""
        if self.paused_at_ts is None and self.speed is not None:
            self.ts0 = self.now_ts(wall)
        self.wall0 = wall
        self.speed = speed

    def pause(self, wall: float) -> None:
        if self.paused_at_ts is None:
            self.paused_at_ts = self.now_ts(wall)

    def resume(self, wall: float) -> None:
        if self.paused_at_ts is not None:
            self.ts0, self.paused_at_ts = self.paused_at_ts, None
            self.wall0 = wall

    @property
    def paused(self) -> bool:
        return self.paused_at_ts is not None

    def lateness(self, ts: int, wall: float) -> float:
        """Seconds past due (>= 0) of an event emitted at `wall`."""
        return max(0.0, wall - self.due(ts)) if self.speed is not None else 0.0
