"""Replay-clock arithmetic (pure): emit times from one anchor, never from summed sleeps.

The replay clock maps event time to wall time as `wall = wall0 + (ts - ts0) / speed`.
Pausing and resuming move the anchor, so the clock never jumps and errors never accumulate.
A speed change or a seek releases the anchor instead: the stream anchors again at the next
event it sends. At "max" the clock does not follow the events (they leave as fast as the
client takes them), so an anchor kept across a change from "max" would lie far behind the
stream and stall it for as long as it had run ahead. Re-anchoring at the next event costs at
most the rest of one gap between two events, and never lets pacing run ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_SPEED", "MIN_SPEED", "NS", "ReplayClock"]

MIN_SPEED = 0.01
MAX_SPEED = 10_000.0
NS = 1_000_000_000


@dataclass
class ReplayClock:
    """speed None means "max": no pacing, events are due as soon as they are read."""

    speed: float | None
    wall0: float = 0.0  # loop time (s) at the anchor
    ts0: int = 0  # event time (ns) at the anchor
    anchored: bool = False  # False: the next event sent anchors the clock
    paused: bool = False
    paused_at_ts: int | None = None  # the replay time a pause froze (None: none to keep)

    def anchor(self, wall: float, ts: int) -> None:
        """Event time `ts` is due at wall time `wall` (the stream is about to send it)."""
        self.wall0, self.ts0, self.anchored = wall, ts, True

    def release(self) -> None:
        """Forget the anchor (a seek): the next event sent anchors the clock again."""
        self.anchored = False
        self.paused_at_ts = None

    def now_ts(self, wall: float) -> int | None:
        """The replay clock: the event time due at wall time `wall` (None before an anchor)."""
        if self.paused_at_ts is not None:
            return self.paused_at_ts
        if not self.anchored:
            return None
        if self.speed is None:
            return self.ts0
        return self.ts0 + int((wall - self.wall0) * self.speed * NS)

    def due(self, ts: int) -> float:
        """Wall time at which an event of time ts is due (-inf at max speed or unanchored)."""
        if self.speed is None or not self.anchored:
            return float("-inf")
        return self.wall0 + (ts - self.ts0) / (self.speed * NS)

    def set_speed(self, speed: float | None) -> None:
        """Change speed; the clock re-anchors at the next event sent (module docstring)."""
        self.speed = speed
        self.release()

    def pause(self, wall: float) -> None:
        if self.paused:
            return
        self.paused = True
        if self.anchored and self.speed is not None:
            self.paused_at_ts = self.now_ts(wall)
        else:  # at max the clock holds no position worth keeping: re-anchor on resume
            self.release()

    def resume(self, wall: float) -> None:
        """Continue from the paused replay time, as if no wall time had passed."""
        if not self.paused:
            return
        self.paused = False
        if self.paused_at_ts is not None and self.anchored:
            self.ts0, self.wall0 = self.paused_at_ts, wall
        self.paused_at_ts = None

    def lateness(self, ts: int, wall: float) -> float:
        """Seconds past due (>= 0) of an event emitted at `wall`."""
        return max(0.0, wall - self.due(ts)) if self.speed is not None and self.anchored else 0.0
