"""Record a venue's live public trades into a log, with the durability of a real-time recording.

Trades reach the log in exchange-time order: each is held `hold` seconds after it arrived (so
trades of different symbols that arrive slightly out of time order are written in order) and
nothing is written while a backfill is in flight (so fetched trades are inserted before the
later trades that revealed their gap). See docs/feeds.md for what is promised.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa

from recorder.config import check_seconds
from recorder.errors import ConfigError, LogExistsError
from recorder.feeds.binance import Binance
from recorder.feeds.coinbase import Coinbase
from recorder.feeds.errors import FeedRestError
from recorder.feeds.gaps import Gap, GapTracker
from recorder.feeds.kraken import Kraken
from recorder.feeds.session import Backoff, run_session
from recorder.feeds.trades import Trade, Venue
from recorder.log import DEFAULT_SEGMENT_ROWS, LogWriter, iso_ns
from recorder.log.schema import TS_TYPE, log_schema

__all__ = ["VENUES", "FeedConfig", "FeedResult", "record_feed"]

VENUES: dict[str, Callable[[list[str]], Venue]] = {
    "binance": Binance, "coinbase": Coinbase, "kraken": Kraken}
OPTIONAL = ("trade_id", "venue", "recv_ts")
TICK = 0.05  # how often held trades are looked at (s)


@dataclass(frozen=True, kw_only=True)
class FeedConfig:
    """One live recording: where, which venue and symbols, and how hard to hold on."""

    path: Path
    venue: str
    symbols: tuple[str, ...]
    ws_url: str | None = None  # replaces the venue's documented WebSocket base URL
    rest_url: str | None = None  # replaces the venue's documented REST base URL
    duration_s: float | None = None
    flush_interval: float = 1.0
    seal_interval: float = 60.0
    segment_rows: int = DEFAULT_SEGMENT_ROWS
    silence_timeout: float = 30.0
    overwrite: bool = False
    hold: float = 0.25  # reorder window: how long a trade waits for older ones (s)
    backfill_timeout: float = 15.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    jitter_seed: int | None = None

    def __post_init__(self) -> None:
        if self.venue not in VENUES:
            raise ConfigError(f"--feed must be one of {', '.join(VENUES)}, got {self.venue!r}")
        if not self.symbols or any(not s.strip() for s in self.symbols):
            raise ConfigError("--symbols needs at least one symbol, e.g. BTC-USDT")
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError(f"--symbols repeat: {','.join(self.symbols)}")
        for url, flag, schemes in ((self.ws_url, "--feed-url", ("ws://", "wss://")),
                                   (self.rest_url, "--rest-url", ("http://", "https://"))):
            if url is not None and not url.startswith(schemes):
                raise ConfigError(f"{flag} {url!r} must start with {' or '.join(schemes)}")
        if self.duration_s is not None:
            check_seconds("--duration", self.duration_s, 0.0, math.inf, open_low=True)
        check_seconds("--flush-interval", self.flush_interval, 0.01, 3600)
        check_seconds("--seal-interval", self.seal_interval, 0.1, 86_400)
        check_seconds("--silence-timeout", self.silence_timeout, 0.1, 86_400)
        if self.segment_rows < 1:
            raise ConfigError("segment rows must be >= 1")


@dataclass(frozen=True)
class FeedResult:
    path: Path
    events: int
    segments: int
    interrupted: bool
    seconds: float
    reconnects: int
    gaps: dict[str, int]  # gaps, expected, backfilled, missing
    late: int  # trades written with ts raised to keep ts non-decreasing

    def to_json(self) -> dict[str, Any]:
        return {"log": str(self.path), "events": self.events, "segments": self.segments,
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "reconnects": self.reconnects, "gaps": self.gaps, "late": self.late}


def record_feed(config: FeedConfig, *, report: Callable[[str], None] = print,
                rng: random.Random | None = None) -> FeedResult:
    """Record until --duration, SIGINT or SIGTERM; seals the log and returns a summary."""
    return asyncio.run(_Recorder(config, report, rng).run())


class _Recorder:
    def __init__(self, config: FeedConfig, report: Callable[[str], None],
                 rng: random.Random | None) -> None:
        self.config = config
        self.report = report
        self.venue = VENUES[config.venue](list(config.symbols))
        self.ws_base = config.ws_url or self.venue.default_ws
        self.rest_base = config.rest_url or self.venue.default_rest
        self.backoff = Backoff(config.backoff_base, config.backoff_cap,
                               rng or random.Random(config.jitter_seed))
        self.writer: LogWriter | None = None
        self.http: aiohttp.ClientSession
        self.tracker: GapTracker
        self.pending_notes: list[dict[str, Any]] = []  # gaps resolved before the log was opened
        self.stopping = False
        self.index: dict[str, int] = {}
        # Held trades, smallest exchange time first: (ts, symbol index, id, n, arrived, trade).
        self.held: list[tuple[int, int, int, int, float, Trade]] = []
        self.counter = itertools.count()
        self.catching_up: dict[str, list[Trade]] = {}  # live trades held during a catch-up
        self.reconnected: set[str] = set()  # symbols whose next gap is due to a reconnect
        self.backfills: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs only
        self.last_ts = -(2**63)
        self.late = 0
        self.reconnects = 0
        self.started_ns = time.time_ns()

    # -- the main loop -----------------------------------------------------------------------
    async def run(self) -> FeedResult:
        config = self.config
        began = time.perf_counter()
        _refuse_existing(config.path, config.overwrite)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if config.duration_s is not None:
            loop.call_later(config.duration_s, stop.set)
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=None, connect=10.0)) as http:
                await self.venue.prepare(http, self.rest_base)
                self.tracker = GapTracker([s.name for s in self.venue.symbols])
                self.index = {s.name: i for i, s in enumerate(self.venue.symbols)}
                self.http = http
                session = asyncio.create_task(run_session(
                    self.venue, http, self.venue.ws_url(self.ws_base),
                    silence_timeout=config.silence_timeout, backoff=self.backoff,
                    on_connect=self._on_connect, on_trades=self._on_trades, report=self.report))
                try:
                    await self._pump(stop, session)
                finally:
                    self.stopping = True
                    session.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await session
                    for task in list(self.backfills):
                        task.cancel()
                    await asyncio.gather(*self.backfills, return_exceptions=True)
                    self._finish()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        writer = self.writer
        return FeedResult(config.path, writer.next_seq if writer else 0,
                          writer.segments_written if writer else 0, stop.is_set(),
                          time.perf_counter() - began, self.reconnects,
                          self.tracker.summary(), self.late)

    async def _pump(self, stop: asyncio.Event, session: asyncio.Task[None]) -> None:
        """Release held trades every TICK, flush every flush interval (even when quiet), until
        stopped; a session that ends (a rejected subscription) ends the recording."""
        last_flush = time.monotonic()
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                done, _ = await asyncio.wait({stopped, session}, timeout=TICK,
                                             return_when=asyncio.FIRST_COMPLETED)
                if session in done:
                    session.result()  # raises FeedSubscribeError
                    return
                if self.writer is None and self.venue.subscribed:
                    self._open_writer()
                self._release(time.monotonic())
                if self.writer is not None and time.monotonic() - last_flush >= \
                        self.config.flush_interval:
                    self.writer.flush()
                    last_flush = time.monotonic()
        finally:
            stopped.cancel()

    def _open_writer(self) -> None:
        # Opened at the first acknowledged subscription: a refused symbol leaves no log behind.
        symbols = self.venue.symbols
        metadata = {"source": f"live:{self.venue.name}", "start": iso_ns(self.started_ns),
                    "feed": {"venue": self.venue.name, "symbols": [s.name for s in symbols],
                             "wire_symbols": [s.wire for s in symbols],
                             "ws_url": self.ws_base, "rest_url": self.rest_base}}
        self.writer = LogWriter(self.config.path, metadata, overwrite=self.config.overwrite,
                                segment_rows=self.config.segment_rows,
                                seal_interval=self.config.seal_interval, optional_columns=OPTIONAL)

    def _finish(self) -> None:
        """Stop: place what catch-ups buffered, write every held trade, seal, unlock."""
        for symbol in list(self.catching_up):
            for trade in sorted(self.catching_up.pop(symbol), key=lambda t: t.trade_id):
                self._accept(trade)
        if self.writer is None:
            if self.held:
                self._open_writer()
            else:
                return
        assert self.writer is not None
        self._release(math.inf, force=True)
        self.writer.flush()
        if self.writer.segment_notes and self.writer.open_rows == 0:
            self.writer.seal(allow_empty=True, wait=True)  # notes must not be lost
        self.writer.close()

    # -- arrivals ------------------------------------------------------------------------------
    def _on_connect(self, reconnect: bool) -> None:
        if not reconnect:
            return
        self.reconnects += 1
        # Trades after each symbol's last id happened while we were away: fetch them, and hold
        # the symbol's live trades until they are in, so both go in in id order.
        for symbol in self.venue.symbols:
            self.reconnected.add(symbol.name)
            if self.tracker.last_id[symbol.name] is not None and symbol.name not in self.catching_up:
                self.catching_up[symbol.name] = []
                self._spawn(self._catch_up(symbol.name))

    def _on_trades(self, trades: list[Trade]) -> None:
        for trade in sorted(trades, key=lambda t: (self.index[t.symbol], t.trade_id)):
            buffered = self.catching_up.get(trade.symbol)
            if buffered is not None:
                buffered.append(trade)
            else:
                self._accept(trade)

    def _accept(self, trade: Trade) -> None:
        cause = "reconnect" if trade.symbol in self.reconnected else "skipped"
        previous_ts = self.tracker.last_ts[trade.symbol]
        verdict, gap = self.tracker.check(trade.symbol, trade.trade_id, trade.ts_ns, cause)
        self.reconnected.discard(trade.symbol)
        if verdict == "duplicate":
            return
        self._hold(trade)
        if gap is not None:
            if self.stopping:
                self._place(gap, [], "recording stopped before a backfill could start")
            else:
                self._spawn(self._fill(gap, previous_ts))

    def _hold(self, trade: Trade) -> None:
        heapq.heappush(self.held, (trade.ts_ns, self.index[trade.symbol], trade.trade_id,
                                   next(self.counter), time.monotonic(), trade))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.backfills.add(task)
        task.add_done_callback(self.backfills.discard)

    # -- backfill --------------------------------------------------------------------------------
    async def _fetch(self, symbol: str, after_id: int, after_ts: int,
                     until_id: int | None) -> tuple[list[Trade], str | None]:
        spec = next(s for s in self.venue.symbols if s.name == symbol)
        try:
            trades = await asyncio.wait_for(self.venue.fetch_trades(
                self.http, self.rest_base, spec, after_id=after_id, after_ts_ns=after_ts,
                until_id=until_id), self.config.backfill_timeout)
            return trades, None
        except FeedRestError as exc:
            return [], str(exc)
        except TimeoutError:
            return [], f"REST backfill took over {self.config.backfill_timeout:g} s"
        except asyncio.CancelledError:
            return [], "recording stopped before the backfill finished"

    async def _fill(self, gap: Gap, after_ts: int) -> None:
        """Fetch the skipped ids of a gap found in the live stream and hold them."""
        fetched, error = await self._fetch(gap.symbol, gap.first - 1, after_ts, gap.last)
        self._place(gap, [t for t in fetched if gap.first <= t.trade_id <= gap.last], error)

    async def _catch_up(self, symbol: str) -> None:
        """After a reconnect: fetch everything after the symbol's last id, then merge it with
        the live trades that arrived meanwhile (live ones win; REST only fills before them)."""
        after_id = self.tracker.last_id[symbol]
        assert after_id is not None
        fetched, error = await self._fetch(symbol, after_id, self.tracker.last_ts[symbol], None)
        live = sorted(self.catching_up.pop(symbol, []), key=lambda t: t.trade_id)
        live = [t for t in live if t.trade_id > after_id]
        upper = live[0].trade_id - 1 if live else max((t.trade_id for t in fetched),
                                                       default=after_id)
        if upper > after_id:
            gap = Gap(symbol, after_id + 1, upper, "reconnect")
            self.tracker.gaps.append(gap)
            self.tracker.last_id[symbol] = upper
            self.reconnected.discard(symbol)
            in_gap = [t for t in fetched if after_id < t.trade_id <= upper]
            if in_gap:
                self.tracker.last_ts[symbol] = in_gap[-1].ts_ns
            self._place(gap, in_gap, error if len(in_gap) < gap.count else None)
        elif error:
            self.report(f"{self.venue.name}: {symbol}: cannot check for missed trades ({error})")
        for trade in live:
            self._accept(trade)

    def _place(self, gap: Gap, fetched: list[Trade], error: str | None) -> None:
        """Hold the fetched trades that can still go in time order; record the gap's outcome."""
        placed: set[int] = set()
        too_late = 0
        for trade in fetched:
            if trade.ts_ns < self.last_ts:
                too_late += 1  # an older trade was already written: it cannot go before it
                continue
            placed.add(trade.trade_id)
            self._hold(trade)
        gap.resolve(placed, too_late, error)
        record = gap.to_json()
        if self.writer is not None:
            self.writer.segment_notes.setdefault("gaps", []).append(record)
        else:
            self.pending_notes.append(record)
        state = "backfilled" if not gap.missing else (
            f"{gap.missing_count} missing" + (f" ({error})" if error else ""))
        self.report(f"{self.venue.name}: {gap.symbol}: gap of {gap.count} trade(s), ids "
                    f"{gap.first}..{gap.last} ({gap.cause}): {len(placed)} backfilled, {state}")

    # -- writing ---------------------------------------------------------------------------------
    def _release(self, now: float, *, force: bool = False) -> None:
        """Write held trades, oldest exchange time first, that have waited `hold` seconds;
        none while a backfill is in flight (its trades may belong before them)."""
        if self.writer is None or (self.backfills and not force):
            return
        if self.pending_notes:
            self.writer.segment_notes.setdefault("gaps", []).extend(self.pending_notes)
            self.pending_notes = []
        cutoff = now - self.config.hold
        out: list[tuple[int, Trade]] = []
        while self.held and (force or self.held[0][4] <= cutoff):
            trade = heapq.heappop(self.held)[5]
            ts = trade.ts_ns
            if ts < self.last_ts:
                # Arrived after a newer trade of another symbol was written: ts may not go
                # back, so it is written at the last written time and counted.
                self.late += 1
                ts = self.last_ts
            self.last_ts = ts
            out.append((ts, trade))
        if out:
            self.writer.append(self._batch(out))

    def _batch(self, rows: list[tuple[int, Trade]]) -> pa.RecordBatch:
        assert self.writer is not None
        first = self.writer.next_seq
        trades = [t for _, t in rows]
        return pa.RecordBatch.from_arrays([
            pa.array(range(first, first + len(rows)), pa.int64()),
            pa.array([ts for ts, _ in rows], pa.int64()).cast(TS_TYPE),
            pa.array([t.symbol for t in trades], pa.string()),
            pa.array([t.price for t in trades], pa.float64()),
            pa.array([t.size for t in trades], pa.float64()),
            pa.array([t.side for t in trades], pa.string()),
            pa.array([str(t.trade_id) for t in trades], pa.string()),
            pa.array([self.venue.name] * len(trades), pa.string()),
            pa.array([t.recv_ns for t in trades], pa.int64()).cast(TS_TYPE),
        ], schema=log_schema(OPTIONAL))


def _refuse_existing(path: Path, overwrite: bool) -> None:
    # The writer is opened only once subscribed; refuse an existing log before connecting.
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise LogExistsError(f"log {path} exists; pass --overwrite to replace it")
