"""The pacing core every replay shares (a client's own stream: own_stream.py; a broadcast:
broadcast.py).

`Player` reads the log through a `Cursor` (a chunk at a time, in a worker thread, so memory
does not depend on the log's size and the event loop never blocks on Parquet decoding),
paces it on an anchored `ReplayClock`, and hands each batch to its subclass: `ClientStream`
(one client, its own clock and controls) or `broadcast.Channel` (many clients, one clock).

Flow control: clients never acknowledge `ticks` (docs/protocol.md), so the server watches what
is still queued for the client's transport (Engine.IO's per-client packet queue, which
only drains as the socket accepts bytes). A client stream emits only while fewer than
`window` batches are queued: at "max" a slow client slows only its own stream; at a fixed
speed it falls behind, which `status` (`lag_ms`) and /metrics show, instead of growing
server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from analysis.alerts import Alert
from recorder.errors import TicktapeError
from recorder.log import Log
from replayer.alerting import Alerting, alert_packet, alerts_between
from replayer.config import ServerConfig
from replayer.cursor import Chunk, Cursor
from replayer.encoding import CARRIED, ticks_packet, ticks_schema
from replayer.errors import LogError, scrub_paths
from replayer.metrics import Metrics
from replayer.pacing import ReplayClock
from replayer.protocol import SubscribeRequest
from replayer.sinks import Sink

__all__ = ["Player"]

logger = logging.getLogger(__name__)
EARLY = 0.0002  # emit when within 0.2 ms of due: asyncio wakes ~0.1-1 ms late anyway
BATCH_HORIZON = 0.001  # ticks due within the next millisecond leave in the same batch
LAG_REPORT = 1.0  # seconds behind schedule before status reports lag
ALERT_READ_FACTOR = 4  # at "max" with alerts: read_rows x this per chunk


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _forget(future: asyncio.Future[Any]) -> None:
    """Drop a prefetch nobody will await; retrieve its outcome so asyncio does not log it."""
    future.cancel()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())


class Player:
    """The pacing core: cursor, clock, the loop that emits batches when they are due."""

    broadcast: ClassVar[bool] = False  # reported in `status`
    carries_extras: ClassVar[bool] = True  # send a real log's trade_id and venue along

    def __init__(self, *, log: Log, request: SubscribeRequest, config: ServerConfig,
                 metrics: Metrics, max_batch: int, prepare_json: bool,
                 alerting: Alerting | None = None) -> None:
        self.log, self.name, self.request = log, log.name, request
        self.config, self.metrics = config, metrics
        # The rules this replay runs (request.alerts: names resolved by the server), or None.
        self.alerting = alerting
        self._alert_config = None if alerting is None or not request.alerts \
            else alerting.engine_config(alerting.select(request.alerts))
        # `alert` packets sent after each of the last `window` batches: flow control counts
        # queued packets, and a batch's alerts must not count as more batches in flight.
        self._alert_packets: deque[int] = deque(maxlen=config.window)
        self.max_batch, self.prepare_json = max_batch, prepare_json
        self.clock = ReplayClock(speed=request.speed)
        self.state = "playing"
        self.position = request.from_seq  # next seq to send
        self.failed: str | None = None  # why the stream stopped on an error, for clients
        self._cursor: Cursor | None = None
        self._chunk: Chunk | None = None
        self._pos = 0
        # Bumped by every seek: work begun for an older position (a read, a send) sees the
        # change when it resumes and discards its result instead of moving the stream back.
        self._epoch = 0
        # Wake-ups use one future plus a loop timer: asyncio.wait_for would create a task per
        # wait, which at 1,000 paced streams costs more than the sends themselves.
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self._closed = False
        self._lagging = False
        # A control's `status` is sent by the loop, after the control's ack has left: the ack's
        # seq is then exactly where the next batch starts (the dashboard relies on that).
        self._status_due = False
        # Real logs' trade_id and venue go to clients too (the fleet's leader publishes the
        # six required columns only: its relays rebuild batches from them).
        self._carried = tuple(c for c in CARRIED if c in log.columns) if self.carries_extras else ()
        self._schema = ticks_schema(self.name, self._carried)
        self._task: asyncio.Task[None] | None = None
        # The next chunk is read (Parquet decode + SMA, in a worker thread) while the current
        # one is sent. Held with the cursor it reads from, so a seek simply ignores it.
        self._prefetch: tuple[Cursor, asyncio.Future[Chunk | None]] | None = None

    # -- hooks for the two kinds of replay -------------------------------------------------
    def audience(self) -> list[Sink]:
        """Who hears `status` and `end`."""
        raise NotImplementedError

    async def _deliver(self, chunk: Chunk, start: int, stop: int) -> None:
        """Send rows [start, stop) of `chunk` to whoever receives them."""
        raise NotImplementedError

    async def _before_step(self) -> None:
        """Runs before each step of the loop (a broadcast admits late joiners here)."""

    async def _ready(self, epoch: int) -> bool:
        """May a batch leave now? False: something changed while waiting; look again."""
        return True

    def _finished(self) -> None:
        """The replay reached the end of the log, or stopped on an error."""

    # -- lifecycle -----------------------------------------------------------------------
    def public(self, text: str) -> str:
        """A message about this log for clients: the log's name, never its server path."""
        return scrub_paths(text, [(self.log.path, self.name)])

    async def _open(self, seq: int) -> tuple[Cursor, Chunk | None]:
        """A cursor at `seq` and its first chunk. Reading that chunk here, not in the loop,
        makes a log unreadable where the request needs it an error acknowledgement."""
        try:
            cursor = await asyncio.to_thread(self._new_cursor, seq)
            return cursor, await asyncio.to_thread(cursor.read)
        except TicktapeError as exc:
            raise LogError(self.public(str(exc))) from exc

    async def start(self) -> None:
        """Open the cursor and read the first chunk (LogError if it cannot), then play."""
        self._cursor, self._chunk = await self._open(self.position)
        # The task reference is held so it is not garbage-collected mid-replay.
        self._task = asyncio.create_task(self._run(), name=f"replay-{self.name}")
        self.metrics.streams += 1
        # A done callback, not a `finally`: a task cancelled before its first step never
        # enters its coroutine, and the gauge must still come down.
        self._task.add_done_callback(self._released)

    def _released(self, _task: asyncio.Task[None]) -> None:
        if self._prefetch is not None:
            _forget(self._prefetch[1])
            self._prefetch = None
        self.metrics.streams -= 1

    def _new_cursor(self, start: int) -> Cursor:
        return Cursor(self.log, start, self.request.symbols, self.request.sma,
                      self._read_rows(), prepare_json=self.prepare_json,
                      alerts=self._alert_config, carried=self._carried)

    def _read_rows(self) -> int:
        """Rows per read: about two seconds of events at this speed (all of a chunk at max).
        A paced stream then holds little, however many streams are open."""
        if self.clock.speed is None:
            # With rules to run, larger reads: the rules' cost per chunk (a split by symbol,
            # a few numpy calls per rule and symbol) then weighs less per tick.
            return self.config.read_rows * (ALERT_READ_FACTOR if self._alert_config else 1)
        info = self.log.info()
        span_s = ((info.last_ts or 0) - (info.first_ts or 0)) / 1e9
        per_second = info.events / span_s if span_s > 0 else float(self.config.read_rows)
        wanted = int(per_second * self.clock.speed * 2)
        return max(512, min(self.config.read_rows, wanted))

    async def close(self) -> None:
        """Stop playing (idempotent). The loop's own `finally` releases what it holds."""
        self._closed = True
        self._wake()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def shutdown(self) -> None:
        """Server stopping: tell every client, then stop."""
        self.state = "ended"
        with contextlib.suppress(Exception):
            await self._status(reason="shutdown")
        await self.close()

    async def _seek(self, seq: int) -> None:
        """Move to `seq` at once, or (LogError) not at all: the stream stays where it was."""
        cursor, first = await self._open(seq)
        self._epoch += 1
        if self._prefetch is not None:
            _forget(self._prefetch[1])
            self._prefetch = None
        self._cursor, self._chunk, self._pos = cursor, first, 0
        self.position = seq
        self.clock.release()
        self.state = "paused" if self.clock.paused else "playing"

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
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken log must not take the server down
            logger.exception("replay of %s failed", self.name)
            self.failed = self.public(str(exc)) if isinstance(exc, TicktapeError) \
                else "internal error"
            self.state = "ended"
            with contextlib.suppress(Exception):
                await self._status(reason=f"error: {self.failed}")
            self._finished()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            if self._status_due:
                self._status_due = False
                await self._status()
            await self._before_step()
            if self.clock.paused or self.state == "ended":
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
            if not self.clock.anchored:
                self.clock.anchor(now, first_ts)  # after a start, seek or speed change
            if self.clock.speed is None:
                stop = min(len(chunk), self._pos + self.max_batch)
            else:
                due = self.clock.due(first_ts)
                if due > now + EARLY:
                    await self._wait(due - now)
                    continue
                horizon = self.clock.now_ts(now + BATCH_HORIZON)
                assert horizon is not None  # anchored just above
                stop = int(np.searchsorted(chunk.ts, horizon, side="right"))
                stop = min(max(stop, self._pos + 1), self._pos + self.max_batch)
            epoch = self._epoch
            if not await self._ready(epoch):
                continue
            if epoch != self._epoch or self.clock.paused or self._closed:
                continue
            await self._emit(chunk, self._pos, stop)
            if epoch == self._epoch:  # a seek during the send has placed the stream anew
                self._pos = stop
            # Let the transports' writer tasks run: queued packets leave only then.
            await asyncio.sleep(0)

    async def _read_chunk(self) -> Chunk | None:
        cursor = self._cursor
        assert cursor is not None
        pending, self._prefetch = self._prefetch, None
        if pending is not None and pending[0] is cursor:
            chunk = await pending[1]
        else:
            if pending is not None:
                _forget(pending[1])
            chunk = await asyncio.to_thread(cursor.read)
        if chunk is not None and cursor is self._cursor and not self._closed:
            self._prefetch = (cursor, asyncio.ensure_future(asyncio.to_thread(cursor.read)))
        return chunk

    async def _next_chunk(self) -> bool:
        """Load the next chunk; at the end follow a live log, loop, or end."""
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
        if epoch != self._epoch:
            return False
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
        for sink in self.audience():
            with contextlib.suppress(Exception):
                await sink.emit("end", {"log": self.name, "last_seq": self.log.events - 1})
        self._finished()
        return False

    def _refresh(self) -> None:
        assert self._cursor is not None
        # Every follower of a log shares its Log: within half a poll interval, one refresh
        # (which parses only what the journal gained) serves them all.
        self.log.refresh(max_age=self.config.follow_poll / 2)
        self._cursor.reopen()

    def _encode(self, batch: pa.RecordBatch, sma: np.ndarray, encoding: str) -> str | list[Any]:
        return ticks_packet(self.name, self._schema, batch, sma, encoding)

    def _encoded(self, chunk: Chunk, start: int, stop: int, encoding: str) -> str | list[Any]:
        prepared = None if chunk.json is None else (chunk.json, start, stop)
        return ticks_packet(self.name, self._schema, chunk.batch.slice(start, stop - start),
                            chunk.sma[start:stop], encoding, prepared)

    def _alerts(self, chunk: Chunk, start: int, stop: int) -> list[Alert]:
        """The alerts raised by rows [start, stop) of `chunk` (computed with the chunk)."""
        if not chunk.alerts:
            return []
        seq = chunk.batch.column(0)
        return alerts_between(chunk.alerts, chunk.alert_seqs, seq[start].as_py(),
                              seq[stop - 1].as_py())

    @property
    def window(self) -> int:
        """Packets a client may hold queued before its stream waits: `window` batches, and
        the alerts sent after them."""
        return self.config.window + sum(self._alert_packets)

    async def _send_alerts(self, sinks: list[Sink], alerts: list[Alert]) -> None:
        """`alert` events, right after the `ticks` batch holding their seqs; then on to the
        webhooks (once per alert whoever heard it)."""
        packets = [alert_packet(a) for a in alerts]
        for sink in sinks:
            for packet in packets:
                await sink.send(packet)
            self.metrics.alerts_sent += len(packets)
        assert self.alerting is not None  # alerts exist only where rules run
        self.alerting.publish(alerts)

    async def _emit(self, chunk: Chunk, start: int, stop: int) -> None:
        epoch = self._epoch
        await self._deliver(chunk, start, stop)
        if epoch != self._epoch:
            return  # a seek moved the stream while this batch was sent
        self.position = int(chunk.batch.column(0)[stop - 1].as_py()) + 1
        lateness = self.clock.lateness(int(chunk.ts[start]),
                                       asyncio.get_running_loop().time())
        self.metrics.observe_lateness(lateness)
        lagging = lateness > LAG_REPORT
        if lagging != self._lagging:
            self._lagging = lagging
            await self._status(lag_ms=round(lateness * 1e3, 1))

    def _status_payload(self, state: str | None = None, **extra: Any) -> dict[str, Any]:
        clock = self.clock.now_ts(asyncio.get_running_loop().time())
        return {"log": self.name, "state": state or self.state, "seq": self.position,
                "speed": "max" if self.clock.speed is None else self.clock.speed,
                "clock": clock, "broadcast": self.broadcast, **extra}

    async def _status(self, sinks: list[Sink] | None = None, **extra: Any) -> None:
        payload = self._status_payload(**extra)
        for sink in sinks if sinks is not None else self.audience():
            with contextlib.suppress(Exception):
                await sink.emit("status", payload)
