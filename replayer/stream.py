"""A replay: read a log incrementally, pace it on an anchored clock, emit `ticks` batches.

One `Stream` serves one subscription, or (broadcast) every client that joins one shared
clock. Reading and SMA run in a worker thread a chunk at a time, so memory does not depend
on the log's size and the event loop never blocks on Parquet decoding.

Flow control: clients never acknowledge `ticks` (contract §3), so the server watches what
is still queued for the client's transport (Engine.IO's per-client packet queue, which
only drains as the socket accepts bytes). A stream emits only while fewer than `window`
batches are queued: at "max" a slow client slows only its own stream; at a fixed speed it
falls behind, which `status` (`lag_ms`) and /metrics show, instead of growing server memory.
A broadcast never waits for one client: one that holds 4 windows of batches is dropped from the
broadcast with a `status` saying so, and can resubscribe with `from_seq` on its own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from socketio import packet as sio_packet

from analysis.streaming import IndicatorSpec, StreamingIndicators, symbol_codes
from recorder.log import Log
from replayer.config import ServerConfig
from replayer.encoding import FastPacket, JsonColumns, arrow_ticks, json_ticks, ticks_schema
from replayer.errors import BadRequest
from replayer.metrics import Metrics
from replayer.pacing import ReplayClock
from replayer.protocol import ControlRequest, SubscribeRequest

__all__ = ["ClientSink", "Sink", "Stream"]

logger = logging.getLogger(__name__)
EARLY = 0.0002  # emit when within 0.2 ms of due: asyncio wakes ~0.1-1 ms late anyway
BATCH_HORIZON = 0.001  # ticks due within the next millisecond leave in the same batch
LAG_REPORT = 1.0  # seconds behind schedule before status reports lag
BROADCAST_SLACK = 4  # a broadcast drops a client only past this many windows queued


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Sink(Protocol):
    sid: str
    encoding: str

    def depth(self) -> int: ...

    async def send(self, encoded: str | list[Any]) -> int: ...

    async def emit(self, event: str, data: Any) -> None: ...


class ClientSink:
    """One Socket.IO client, addressed through Engine.IO so pre-encoded packets go out as-is."""

    def __init__(self, sio: Any, sid: str, encoding: str) -> None:
        self.sio, self.sid, self.encoding = sio, sid, encoding
        self.eio_sid = sio.manager.eio_sid_from_sid(sid, "/")

    def depth(self) -> int:
        socket = self.sio.eio.sockets.get(self.eio_sid)
        # Packets the transport has not yet taken; engineio keeps no byte count of its own.
        return socket.queue.qsize() if socket is not None else 0

    async def send(self, encoded: str | list[Any]) -> int:
        parts = encoded if isinstance(encoded, list) else [encoded]
        for part in parts:
            await self.sio.eio.send(self.eio_sid, part)
        return sum(len(p) for p in parts)

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data, to=self.sid)


@dataclass
class _Chunk:
    batch: pa.RecordBatch
    ts: np.ndarray
    sma: np.ndarray
    json: JsonColumns | None = None  # prepared only for JSON subscribers

    def __len__(self) -> int:
        return self.batch.num_rows


class _Cursor:
    """Reads the log from a seq on, filtered by symbol, with the live SMA (worker thread)."""

    def __init__(self, log: Log, start: int, symbols: tuple[str, ...] | None, sma: int,
                 read_rows: int, prepare_json: bool) -> None:
        self.log, self.symbols, self.sma, self.read_rows = log, symbols, sma, read_rows
        self.prepare_json = prepare_json
        self._wanted = pa.array(symbols) if symbols else None
        self.engine = StreamingIndicators(IndicatorSpec(sma=(sma,)))
        self.next_seq = start
        self._warm_up(start)
        self._it = log.iter_batches(start, read_rows)

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
            rows = [self._filter(b) for b in itertools.takewhile(
                lambda b: b.column(0)[0].as_py() < start,
                self.log.iter_batches(lo, self.read_rows))]  # stop at start, not the log's end
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

    def reopen(self) -> None:
        """Continue from where reading stopped, over a refreshed log (follow mode)."""
        self._it = self.log.iter_batches(self.next_seq, self.read_rows)

    def read(self) -> _Chunk | None:
        for batch in self._it:
            self.next_seq = int(batch.column(0)[-1].as_py()) + 1
            batch = self._filter(batch)
            if batch.num_rows == 0:
                continue
            ts = batch.column(1).cast(pa.int64()).to_numpy()
            codes = symbol_codes(batch.column(2))  # once, for the SMA and the JSON encoder
            sma = self.engine.update(batch.column(2), ts, batch.column(3).to_numpy(), codes=codes)
            prepared = JsonColumns(self.log.name, batch, ts, codes) if self.prepare_json else None
            return _Chunk(batch, ts, sma[f"sma_{self.sma}"], prepared)
        return None


class Stream:
    """A paced replay of one log to one client, or to a broadcast's clients."""

    def __init__(self, *, log: Log, request: SubscribeRequest, config: ServerConfig,
                 metrics: Metrics, sinks: list[Sink], broadcast: bool = False,
                 on_end: Callable[[Stream], None] | None = None) -> None:
        self.log, self.name, self.request = log, log.name, request
        self.config, self.metrics = config, metrics
        self.sinks = sinks
        self.broadcast = broadcast
        self.on_end = on_end
        self.clock = ReplayClock(speed=request.speed)
        self.state = "playing"
        self.paused = False
        self.position = request.from_seq  # next seq to send
        self._anchored = False
        self._cursor: _Cursor | None = None
        self._chunk: _Chunk | None = None
        self._pos = 0
        self._epoch = 0
        # Wake-ups use one future plus a loop timer: asyncio.wait_for would create a task per
        # wait, which at 1,000 paced streams costs more than the sends themselves.
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self._closed = False
        self._lagging = False
        self._joiners: list[Sink] = []
        self._recent: deque[tuple[pa.RecordBatch, np.ndarray]] = deque()
        self._recent_rows = 0
        self._schema = ticks_schema(self.name)
        self.max_batch = config.max_batch_arrow if (
            request.encoding == "arrow" and not broadcast) else config.max_batch
        self._task: asyncio.Task[None] | None = None
        # The next chunk is read (Parquet decode + SMA, in a worker thread) while the current
        # one is sent. Held with the cursor it reads from, so a seek simply ignores it.
        self._prefetch: tuple[_Cursor, asyncio.Future[_Chunk | None]] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the cursor (may read for SMA warm-up) and start the pacing task."""
        self._cursor = await asyncio.to_thread(self._new_cursor, self.position)
        # The task reference is held so it is not garbage-collected mid-replay.
        self._task = asyncio.create_task(self._run(), name=f"stream-{self.name}")
        self.metrics.streams += 1

    def _new_cursor(self, start: int) -> _Cursor:
        return _Cursor(self.log, start, self.request.symbols, self.request.sma,
                       self._read_rows(), prepare_json=self.broadcast
                       or self.request.encoding == "json")

    def _read_rows(self) -> int:
        """Rows per read: about two seconds of events at this speed (all of a chunk at max).
        A paced stream then holds little, however many streams are open."""
        if self.clock.speed is None:
            return self.config.read_rows
        info = self.log.info()
        span_s = ((info.last_ts or 0) - (info.first_ts or 0)) / 1e9
        per_second = info.events / span_s if span_s > 0 else float(self.config.read_rows)
        wanted = int(per_second * self.clock.speed * 2)
        return max(512, min(self.config.read_rows, wanted))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._prefetch is not None:
            self._prefetch[1].cancel()
            self._prefetch = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self.metrics.streams -= 1

    async def shutdown(self) -> None:
        """Server stopping: tell every client, then stop."""
        self.state = "ended"
        with contextlib.suppress(Exception):
            await self._status(reason="shutdown")
        await self.close()

    # -- broadcast membership --------------------------------------------------------------
    def join(self, sink: Sink) -> None:
        self._joiners.append(sink)
        self._wake()

    def leave(self, sid: str) -> None:
        self.sinks = [s for s in self.sinks if s.sid != sid]
        self._joiners = [s for s in self._joiners if s.sid != sid]
        self.metrics.queue_depth.pop(sid, None)

    @property
    def members(self) -> int:
        return len(self.sinks) + len(self._joiners)

    async def _admit_joiners(self) -> None:
        """Late joiners get the recent window at once, then the live batches (no gap)."""
        joiners, self._joiners = self._joiners, []
        for sink in joiners:
            if self._recent:
                batch = pa.Table.from_batches([b for b, _ in self._recent]).combine_chunks() \
                    .to_batches()[0]
                sma = np.concatenate([s for _, s in self._recent])
                await sink.send(self._encode(batch, sma, sink.encoding))
            await self._status(sinks=[sink])
            self.sinks.append(sink)

    # -- control ---------------------------------------------------------------------------
    async def control(self, req: ControlRequest) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if req.action == "pause":
            if not self.paused:
                self.paused = True
                self.clock.pause(now)
                self.state = "paused" if self.state != "ended" else "ended"
        elif req.action == "resume":
            if self.paused:
                self.paused = False
                if self._anchored:
                    self.clock.resume(now)
                else:
                    self.clock.paused_at_ts = None
                if self.state == "paused":
                    self.state = "playing"
        elif req.action == "speed":
            self.clock.set_speed(req.speed, now)
        elif req.action == "seek":
            seq = req.seq
            if seq is None:
                assert req.ts_ns is not None
                seq = await asyncio.to_thread(self.log.seq_at_ts, req.ts_ns)
            if seq > self.log.events:
                raise BadRequest(f"seek seq {seq} is beyond the log's end ({self.log.events} "
                                 "events)")
            await self._seek(seq)
        self._wake()
        await self._status()

    async def _seek(self, seq: int) -> None:
        self._epoch += 1
        self._cursor = await asyncio.to_thread(self._new_cursor, seq)
        self._chunk, self._pos = None, 0
        self.position = seq
        self._anchored = False
        if self.paused:
            self.clock.paused_at_ts = None
            self.state = "paused"
        else:
            self.state = "playing"

    # -- the pacing loop -------------------------------------------------------------------
    def _wake(self) -> None:
        """Interrupt the current wait (a control, a joiner, close)."""
        self._woken = True
        if self._waiter is not None:
            _resolve(self._waiter)

    async def _wait(self, timeout: float | None) -> None:
        if self._woken:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self._woken = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if not self.broadcast:
                await self._status()
            while not self._closed:
                if self._joiners:
                    await self._admit_joiners()
                if self.paused or self.state == "ended":
                    await self._wait(None)
                    continue
                chunk = self._chunk
                if chunk is None or self._pos >= len(chunk):
                    if not await self._next_chunk():
                        continue
                    chunk = self._chunk
                    assert chunk is not None
                now = loop.time()
                first_ts = int(chunk.ts[self._pos])
                if not self._anchored:
                    self.clock.anchor(now, first_ts)
                    self._anchored = True
                if self.clock.speed is None:
                    stop = min(len(chunk), self._pos + self.max_batch)
                else:
                    due = self.clock.due(first_ts)
                    if due > now + EARLY:
                        await self._wait(due - now)
                        continue
                    horizon = self.clock.now_ts(now + BATCH_HORIZON)
                    stop = int(np.searchsorted(chunk.ts, horizon, side="right"))
                    stop = min(max(stop, self._pos + 1), self._pos + self.max_batch)
                epoch = self._epoch
                if not self.broadcast and not await self._backpressure(epoch):
                    continue
                if epoch != self._epoch or self.paused:
                    continue
                await self._emit(chunk, self._pos, stop)
                self._pos = stop
                # Let the transports' writer tasks run: queued packets leave only then.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken log must not take the server down
            logger.exception("stream of %s failed", self.name)
            self.state = "ended"
            with contextlib.suppress(Exception):
                await self._status(reason=f"error: {exc}")

    async def _read_chunk(self) -> _Chunk | None:
        cursor = self._cursor
        assert cursor is not None
        pending, self._prefetch = self._prefetch, None
        if pending is not None and pending[0] is cursor:
            chunk = await pending[1]
        else:
            chunk = await asyncio.to_thread(cursor.read)
        if chunk is not None and cursor is self._cursor:
            self._prefetch = (cursor, asyncio.ensure_future(asyncio.to_thread(cursor.read)))
        return chunk

    async def _next_chunk(self) -> bool:
        """Load the next chunk; at the end follow a live log, loop, or end."""
        assert self._cursor is not None
        epoch = self._epoch
        chunk = await self._read_chunk()
        if epoch != self._epoch:
            return False
        if chunk is not None:
            self._chunk, self._pos = chunk, 0
            return True
        # Nothing more in the snapshot: look again (a live log grows; a recorder may have
        # just sealed its last segment).
        await asyncio.to_thread(self._refresh)
        if epoch != self._epoch:
            return False
        chunk = await self._read_chunk()
        if chunk is not None:
            self._chunk, self._pos = chunk, 0
            return True
        if self.log.live:
            await self._wait(self.config.follow_poll)
            return False
        if self.request.loop and self.log.events:
            await self._seek(0)
            return False
        self.state = "ended"
        await self._status()
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.emit("end", {"log": self.name, "last_seq": self.log.events - 1})
        if self.on_end is not None:
            self.on_end(self)
        return False

    def _refresh(self) -> None:
        assert self._cursor is not None
        self.log.refresh()
        self._cursor.reopen()

    async def _backpressure(self, epoch: int) -> bool:
        sink = self.sinks[0]
        waited = False
        while True:
            depth = sink.depth()
            self.metrics.queue_depth[sink.sid] = depth
            if depth < self.config.window:
                return True
            if not waited:
                self.metrics.backpressure_waits += 1
                waited = True
            await asyncio.sleep(0.002)
            if self._closed or epoch != self._epoch or self.paused:
                return False

    def _encode(self, batch: pa.RecordBatch, sma: np.ndarray, encoding: str,
                prepared: tuple[JsonColumns, int, int] | None = None) -> str | list[Any]:
        payload: Any
        if encoding == "arrow":
            payload = arrow_ticks(self._schema, batch, sma)
        elif prepared is not None:
            columns, start, stop = prepared
            payload = columns.ticks(start, stop, sma)
        else:
            payload = json_ticks(self.name, batch, sma)
        encoded: str | list[Any] = FastPacket(sio_packet.EVENT, data=["ticks", payload],
                                              namespace="/").encode()
        return encoded

    async def _emit(self, chunk: _Chunk, start: int, stop: int) -> None:
        loop = asyncio.get_running_loop()
        batch = chunk.batch.slice(start, stop - start)
        sma = chunk.sma[start:stop]
        encoded: dict[str, str | list[Any]] = {}
        dropped: list[Sink] = []
        for sink in list(self.sinks):
            if self.broadcast:
                depth = sink.depth()
                self.metrics.queue_depth[sink.sid] = depth
                if depth >= BROADCAST_SLACK * self.config.window:
                    dropped.append(sink)
                    continue
            if sink.encoding not in encoded:
                prepared = None if chunk.json is None else (chunk.json, start, stop)
                encoded[sink.encoding] = self._encode(batch, sma, sink.encoding, prepared)
            size = await sink.send(encoded[sink.encoding])
            self.metrics.sent(stop - start, size)
        for sink in dropped:
            self.leave(sink.sid)
            self.metrics.slow_consumers_dropped += 1
            with contextlib.suppress(Exception):
                await sink.emit("status", self._status_payload(state="ended",
                                                               reason="slow_consumer"))
        self.position = int(batch.column(0)[-1].as_py()) + 1
        lateness = self.clock.lateness(int(chunk.ts[start]), loop.time())
        self.metrics.observe_lateness(lateness)
        lagging = lateness > LAG_REPORT
        if lagging != self._lagging:
            self._lagging = lagging
            await self._status(lag_ms=round(lateness * 1e3, 1))
        if self.broadcast:
            self._recent.append((batch, sma))
            self._recent_rows += batch.num_rows
            while self._recent_rows - len(self._recent[0][0]) >= self.config.recent_ticks:
                self._recent_rows -= len(self._recent.popleft()[0])

    def _status_payload(self, state: str | None = None, **extra: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        clock = self.clock.now_ts(loop.time()) if self._anchored else None
        return {"log": self.name, "state": state or self.state, "seq": self.position,
                "speed": "max" if self.clock.speed is None else self.clock.speed,
                "clock": clock, "broadcast": self.broadcast, **extra}

    async def _status(self, sinks: list[Sink] | None = None, **extra: Any) -> None:
        payload = self._status_payload(**extra)
        for sink in sinks if sinks is not None else self.sinks:
            with contextlib.suppress(Exception):
                await sink.emit("status", payload)
