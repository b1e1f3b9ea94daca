"""Record a simulated session into a log, fast-forward or paced by the wall clock."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import numpy as np

from recorder.batches import FAST_CHUNK, BatchMaker, metadata_for
from recorder.config import DEFAULT_FAST_START, SimConfig, check_seconds, parse_instant
from recorder.errors import ConfigError
from recorder.log import DEFAULT_SEGMENT_ROWS, LogWriter
from recorder.simulator import Simulator

__all__ = ["RecordConfig", "RecordResult", "record"]

@dataclass(frozen=True, kw_only=True)
class RecordConfig:
    """One recording: where, what, how long, and how it is paced."""

    path: Path
    sim: SimConfig
    ticks: int | None = None
    duration_s: float | None = None
    realtime: bool = False
    clock: Literal["sim", "wall"] = "sim"
    start_ns: int | None = None  # None: fixed instant (fast) or now (real-time)
    flush_interval: float = 1.0
    overwrite: bool = False
    segment_rows: int = DEFAULT_SEGMENT_ROWS
    # Real time: seal at least this often, so plain Parquet readers see the recording at most
    # one seal interval (plus one flush) behind. 60 s is Flink's file sink rolling default.
    seal_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.ticks is not None and self.ticks <= 0:
            raise ConfigError(f"--ticks must be > 0, got {self.ticks}")
        if self.duration_s is not None and not (math.isfinite(self.duration_s)
                                                and self.duration_s > 0):
            raise ConfigError(f"--duration must be > 0, got {self.duration_s}")
        check_seconds("--flush-interval", self.flush_interval, 0.01, 3600)
        if self.clock not in ("sim", "wall"):
            raise ConfigError(f"--clock must be sim or wall, got {self.clock!r}")
        if self.clock == "wall" and not self.realtime:
            raise ConfigError("--clock wall needs --realtime")
        check_seconds("--seal-interval", self.seal_interval, 0.1, 86_400)
        if self.segment_rows < 1:
            raise ConfigError("segment rows must be >= 1")
        if not self.realtime and self.ticks is None and self.duration_s is None:
            raise ConfigError("a fast recording needs --ticks or --duration")


@dataclass(frozen=True)
class RecordResult:
    path: Path
    events: int
    segments: int
    interrupted: bool
    seconds: float


class _StopFlag:
    """SIGINT/SIGTERM set the flag; the loop then seals the log and returns normally."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def record(config: RecordConfig, *, progress: Callable[[int, int | None], None] | None = None,
           stop: threading.Event | None = None) -> RecordResult:
    """Run one recording to completion (or until SIGINT/SIGTERM/stop), sealing the log."""
    # Real time: the simulated clock and the pacing clock share one anchor, taken together.
    mono0, start_ns = time.monotonic_ns(), config.start_ns
    if start_ns is None:
        start_ns = parse_instant(DEFAULT_FAST_START) if not config.realtime else time.time_ns()
    mode = "realtime" if config.realtime else "fast"
    metadata = metadata_for(config.sim, start_ns=start_ns, clock=config.clock, mode=mode)
    duration_ns = None if config.duration_s is None else round(config.duration_s * 1e9)
    simulator = Simulator(config.sim)
    make = BatchMaker(config.sim, start_ns)
    began = time.perf_counter()
    with _StopFlag() as flag, LogWriter(
            config.path, metadata, overwrite=config.overwrite, segment_rows=config.segment_rows,
            seal_interval=config.seal_interval if config.realtime else None) as writer:
        halt = stop or flag.event
        if stop is not None:
            # Either source stops the loop: a caller's event or a signal.
            def _relay(signum: int, frame: FrameType | None) -> None:
                halt.set()
            flag._handle = _relay  # type: ignore[method-assign]
        if config.realtime:
            _record_realtime(config, simulator, make, writer, duration_ns, halt, flag.event,
                             progress, mono0)
        else:
            _record_fast(config, simulator, make, writer, duration_ns, halt, flag.event, progress)
        interrupted = halt.is_set() or flag.event.is_set()
    return RecordResult(config.path, make.next_seq, writer.segments_written, interrupted,
                        time.perf_counter() - began)


def _remaining(config: RecordConfig, emitted: int) -> int:
    return FAST_CHUNK if config.ticks is None else min(FAST_CHUNK, config.ticks - emitted)


def _record_fast(config: RecordConfig, simulator: Simulator, make: BatchMaker,
                 writer: LogWriter, duration_ns: int | None, halt: threading.Event,
                 signalled: threading.Event,
                 progress: Callable[[int, int | None], None] | None) -> None:
    last_flush = time.monotonic()
    total = config.ticks
    while not (halt.is_set() or signalled.is_set()):
        want = _remaining(config, make.next_seq)
        if want <= 0:
            break
        # Fill the open segment exactly, so segment boundaries do not depend on chunking.
        want = min(want, writer.segment_rows - writer.open_rows)
        events = simulator.take(want, until_ns=duration_ns)
        if len(events) == 0:
            break
        writer.append(make(events))
        if progress:
            progress(make.next_seq, total)
        if time.monotonic() - last_flush >= config.flush_interval:
            writer.flush()
            last_flush = time.monotonic()


def _record_realtime(config: RecordConfig, simulator: Simulator, make: BatchMaker,
                     writer: LogWriter, duration_ns: int | None, halt: threading.Event,
                     signalled: threading.Event,
                     progress: Callable[[int, int | None], None] | None, mono0: int) -> None:
    # Emission times come from one anchor (mono0 + offset), never summed sleeps: no drift.
    last_flush = time.monotonic()
    last_wall = 0
    while not (halt.is_set() or signalled.is_set()):
        if config.ticks is not None and make.next_seq >= config.ticks:
            break
        elapsed = time.monotonic_ns() - mono0
        until = elapsed + 1 if duration_ns is None else min(elapsed + 1, duration_ns)
        want = FAST_CHUNK if config.ticks is None else config.ticks - make.next_seq
        events = simulator.take(want, until_ns=until)
        if len(events):
            ts = None
            if config.clock == "wall":
                last_wall = max(last_wall, time.time_ns())
                ts = np.full(len(events), last_wall, dtype=np.int64)
            writer.append(make(events, ts))
            if progress:
                progress(make.next_seq, config.ticks)
        now = time.monotonic()
        if now - last_flush >= config.flush_interval:
            writer.flush()
            last_flush = now
        if duration_ns is not None and elapsed >= duration_ns:
            break
        next_due = simulator.next_offset_ns()
        wait_s = min((mono0 + next_due - time.monotonic_ns()) / 1e9,
                     last_flush + config.flush_interval - time.monotonic(), 0.25)
        if duration_ns is not None:
            wait_s = min(wait_s, (mono0 + duration_ns - time.monotonic_ns()) / 1e9)
        if wait_s > 0:
            halt.wait(wait_s)
    writer.flush()
