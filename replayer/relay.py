"""A fleet broadcast's audience on one process: what the leader publishes, delivered in order,
every seq exactly once, to this process's members.

Every batch the leader publishes carries `prev` and `next`: the broadcast's position (the
first seq not yet emitted, see `vpos`) before and after it. The relay keeps its own position
and so repairs what pub/sub loses or repeats: a batch it already delivered (a successor
re-emitting after a Redis restart) is dropped, or cut where it overlaps; a batch after a gap
(this process's subscription to Redis was down) is preceded by the missing ticks, read from
the log, which every process of the fleet serves. Late joiners get the recent window (up to
`recent_ticks`, from what this process delivered, or read from the log when it has none), or
with `from_seq` everything from there on; then the live batches, with no gap.

Everything arrives through one inbox (`offer`) and is handled by one task, in order: ticks,
`status`, `end` and any other event the leader sends to the broadcast's room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from socketio import packet as sio_packet

from recorder.log import SCHEMA, Log
from replayer.config import ServerConfig
from replayer.cursor import Cursor
from replayer.encoding import FastPacket, ticks_packet, ticks_schema
from replayer.metrics import Metrics
from replayer.protocol import SubscribeRequest
from replayer.sinks import Sink

__all__ = ["LAP", "MAX_CATCH_UP", "Item", "Relay", "vpos"]

logger = logging.getLogger(__name__)
# A looping broadcast replays seq 0.. again: positions count laps so they only grow.
LAP = 2**40
MAX_CATCH_UP = 200_000  # ticks a joiner with from_seq may be behind the broadcast
SLACK = 4  # as broadcast.BROADCAST_SLACK: windows of batches queued before a member is dropped


def vpos(lap: int, seq: int) -> int:
    """A position that only grows, across the laps of a looping broadcast."""
    return lap * LAP + seq


@dataclass
class Item:
    """One thing for the members: a ticks batch (with its positions) or another event."""

    event: str
    data: Any = None
    prev: int = 0  # ticks: the broadcast's position before and after this batch
    next: int = 0
    batch: pa.RecordBatch | None = None
    sma: np.ndarray | None = None
    packet: str | list[Any] | None = None  # the JSON `ticks` packet, when already encoded

    @property
    def lap(self) -> int:
        return (self.next - 1) // LAP  # next > the batch's last position


@dataclass
class _Joiner:
    sink: Sink
    want: int | None  # from_seq (a position), or None: the recent window
    backlog: list[Item] = field(default_factory=list)  # arrived while its catch-up was read


def batch_from_json(payload: dict[str, Any]) -> tuple[pa.RecordBatch, np.ndarray]:
    """A `ticks` JSON payload as received from Redis, back as Arrow columns (exact: integers
    stay integers, orjson writes floats that read back to the same double)."""
    batch = pa.RecordBatch.from_arrays(
        [pa.array(payload["seq"], pa.int64()),
         pa.array(payload["ts"], pa.int64()).cast(SCHEMA.field("ts").type),
         pa.array(payload["symbol"], pa.string()), pa.array(payload["price"], pa.float64()),
         pa.array(payload["size"], pa.float64()), pa.array(payload["side"], pa.string())],
        schema=SCHEMA)
    return batch, np.array(payload["sma"], dtype=float)  # None -> NaN


class Relay:
    """The members of one fleet broadcast on this process. `on_detach(sid)` hears of every
    member it lets go (dropped as slow, or the broadcast ended)."""

    def __init__(self, *, log: Log, request: SubscribeRequest, config: ServerConfig,
                 metrics: Metrics, on_detach: Callable[[str], None]) -> None:
        self.log, self.name, self.request = log, log.name, request
        self.config, self.metrics, self.on_detach = config, metrics, on_detach
        self.position: int | None = None  # the next position to deliver; None until known
        self.sinks: list[Sink] = []
        self.joiners: dict[str, _Joiner] = {}
        self.finished = False
        self._schema = ticks_schema(self.name)
        self._inbox: asyncio.Queue[Item] = asyncio.Queue()
        # (prev, next, batch, sma) of the last batches delivered, contiguous.
        self._recent: deque[tuple[int, int, pa.RecordBatch, np.ndarray]] = deque()
        self._recent_rows = 0
        # Held so the task is not garbage-collected; cancelled by close().
        self._task: asyncio.Task[None] | None = None
        self._admitting: set[asyncio.Task[None]] = set()

    # -- membership ------------------------------------------------------------------------
    @property
    def members(self) -> int:
        return len(self.sinks) + len(self.joiners)

    def start(self, position: int) -> None:
        """Deliver from `position` on (what the inbox holds before it is dropped or cut)."""
        if self.position is None:
            self.position = position
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"relay-{self.name}")

    def at(self, from_seq: int) -> int:
        """A joiner's from_seq as a position in the current lap; ValueError if it is too far
        behind the broadcast to be caught up."""
        assert self.position is not None, "start() first"
        want = vpos(self.position // LAP, from_seq)
        if self.position - want > MAX_CATCH_UP:
            raise ValueError(f"from_seq is {self.position - want:,} ticks behind the broadcast "
                             f"(at most {MAX_CATCH_UP:,} are caught up); subscribe with mode "
                             "'stream' to replay from there on your own clock")
        return want

    def join(self, sink: Sink, want: int | None) -> None:
        """Admit a member: its catch-up is read in a task, then it receives the live batches."""
        assert self.position is not None, "start() first"
        joiner = _Joiner(sink, want)
        self.joiners[sink.sid] = joiner
        # Held until done, so it is not garbage-collected mid-way; a failure is logged.
        task = asyncio.create_task(self._admit(joiner, self.position))
        self._admitting.add(task)
        task.add_done_callback(self._admitted)

    def _admitted(self, task: asyncio.Task[None]) -> None:
        self._admitting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("admitting a member failed", exc_info=task.exception())

    def leave(self, sid: str) -> None:
        self.sinks = [s for s in self.sinks if s.sid != sid]
        self.joiners.pop(sid, None)
        self.metrics.queue_depth.pop(sid, None)

    def offer(self, item: Item) -> None:
        self._inbox.put_nowait(item)

    async def close(self) -> None:
        self.finished = True
        task, self._task = self._task, None
        for admitting in list(self._admitting):
            admitting.cancel()
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def tell(self, event: str, data: Any) -> None:
        """Send an event to this process's members only (e.g. a shutdown status)."""
        for sink in [*self.sinks, *(j.sink for j in self.joiners.values())]:
            with contextlib.suppress(Exception):
                await sink.emit(event, data)

    def status_payload(self, state: str = "playing", **extra: Any) -> dict[str, Any]:
        speed = self.request.speed
        return {"log": self.name, "state": state, "seq": (self.position or 0) % LAP,
                "speed": "max" if speed is None else speed, "clock": None, "broadcast": True,
                **extra}

    # -- the delivery loop -----------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            item = await self._inbox.get()
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad message must not stop the broadcast here
                logger.exception("relay of %s failed on a %s message", self.name, item.event)
            # Let the transports' writer tasks run: queued packets leave only then (a backlog
            # of items would otherwise fill every member's queue before any of it is sent).
            await asyncio.sleep(0)

    async def _handle(self, item: Item) -> None:
        assert self.position is not None
        if item.event != "ticks":
            final = _final_seq(item)
            if final is not None and vpos(self.position // LAP, final) > self.position:
                # Batches lost on the way (or an end said here after Redis was away): the
                # rest of the log first, so the end follows the last seq.
                await self._fill(self.position, vpos(self.position // LAP, final))
            await self._broadcast(item)
            if item.event == "end" or (item.event == "status" and isinstance(item.data, dict)
                                       and item.data.get("state") == "ended"
                                       and item.data.get("reason")):
                self._finish()  # the end; or an error (no end follows)
            return
        if item.next <= self.position:  # delivered already (a successor re-emitted it)
            self.metrics.fleet_duplicate_ticks += 0 if item.batch is None else item.batch.num_rows
            return
        if item.prev > self.position:  # missed while our subscription to Redis was down
            await self._fill(self.position, item.prev)
        item = self._cut(item, self.position)
        self.position = item.next
        await self._broadcast(item)
        if item.batch is not None and item.sma is not None:
            self._remember(item.prev, item.next, item.batch, item.sma)

    def _cut(self, item: Item, position: int, count: bool = True) -> Item:
        """The part of a ticks item at or after `position`."""
        assert item.batch is not None and item.sma is not None
        if item.prev >= position:
            return item
        first = int(np.searchsorted(vpos(item.lap, item.batch.column(0).to_numpy()), position))
        if count:
            self.metrics.fleet_duplicate_ticks += first
        return Item("ticks", prev=position, next=item.next,
                    batch=item.batch.slice(first), sma=item.sma[first:])

    async def _fill(self, start: int, stop: int) -> None:
        """Deliver positions [start, stop) from the log: Redis lost them on the way here."""
        for lo, hi in _lap_spans(start, stop, self.log.events):
            parts = await asyncio.to_thread(self._read, lo % LAP, hi - lo)
            self.metrics.fleet_gap_ticks += sum(b.num_rows for b, _ in parts)
            for batch, sma in parts:
                assert self.position is not None
                last = int(batch.column(0)[-1].as_py())
                item = Item("ticks", prev=self.position, next=vpos(lo // LAP, last) + 1,
                            batch=batch, sma=sma)
                await self._broadcast(item)
                self._remember(item.prev, item.next, batch, sma)
                self.position = item.next
        self.position = stop

    def _read(self, start: int, count: int) -> list[tuple[pa.RecordBatch, np.ndarray]]:
        """Seqs [start, start + count) of the log with this broadcast's symbols and SMA,
        cut into batches of at most max_batch (worker thread)."""
        if count <= 0:
            return []
        cursor = Cursor(self.log, start, self.request.symbols, self.request.sma,
                        min(self.config.read_rows, max(count, 512)), prepare_json=False)
        out: list[tuple[pa.RecordBatch, np.ndarray]] = []
        stop = start + count
        while (chunk := cursor.read()) is not None:
            seqs = chunk.batch.column(0).to_numpy()
            n = int(np.searchsorted(seqs, stop))
            for lo in range(0, n, self.config.max_batch):
                hi = min(n, lo + self.config.max_batch)
                out.append((chunk.batch.slice(lo, hi - lo), chunk.sma[lo:hi]))
            if n < len(seqs) or cursor.next_seq >= stop:
                break
        return out

    async def _broadcast(self, item: Item) -> None:
        """To every live member (slow ones are dropped), and into every joiner's backlog."""
        for joiner in self.joiners.values():
            joiner.backlog.append(item)
        if item.event != "ticks":
            for sink in list(self.sinks):
                with contextlib.suppress(Exception):
                    await sink.emit(item.event, item.data)
            return
        assert item.batch is not None
        if item.batch.num_rows == 0:
            return
        packets: dict[str, str | list[Any]] = {}
        dropped: list[Sink] = []
        for sink in list(self.sinks):
            depth = sink.depth()
            self.metrics.queue_depth[sink.sid] = depth
            if depth >= SLACK * self.config.window:
                dropped.append(sink)
                continue
            if sink.encoding not in packets:
                packets[sink.encoding] = self._packet(item, sink.encoding)
            size = await sink.send(packets[sink.encoding])
            self.metrics.sent(item.batch.num_rows, size)
        for sink in dropped:
            await self._drop(sink)

    def _packet(self, item: Item, encoding: str) -> str | list[Any]:
        if encoding == "json" and item.packet is not None:
            return item.packet
        if encoding == "json" and isinstance(item.data, dict):  # as received, not cut
            encoded: str | list[Any] = FastPacket(sio_packet.EVENT, data=["ticks", item.data],
                                                  namespace="/").encode()
            return encoded
        assert item.batch is not None and item.sma is not None
        return ticks_packet(self.name, self._schema, item.batch, item.sma, encoding)

    async def _drop(self, sink: Sink) -> None:
        self.leave(sink.sid)
        self.metrics.slow_consumers_dropped += 1
        self.on_detach(sink.sid)
        with contextlib.suppress(Exception):
            await sink.emit("status", self.status_payload("ended", reason="slow_consumer"))

    def _finish(self) -> None:
        """The broadcast ended (its last seq, or an error): every member is let go (joiners
        once their backlog, which holds the end, is delivered)."""
        self.finished = True
        for sid in [s.sid for s in self.sinks]:
            self.leave(sid)
            self.on_detach(sid)

    def _remember(self, prev: int, next_: int, batch: pa.RecordBatch, sma: np.ndarray) -> None:
        if self._recent and self._recent[-1][1] != prev:
            self._recent.clear()  # keep only a contiguous window
            self._recent_rows = 0
        self._recent.append((prev, next_, batch, sma))
        self._recent_rows += batch.num_rows
        while self._recent_rows - self._recent[0][2].num_rows >= self.config.recent_ticks:
            self._recent_rows -= self._recent.popleft()[2].num_rows

    # -- admitting a member ----------------------------------------------------------------
    async def _admit(self, joiner: _Joiner, position: int) -> None:
        """Catch-up first (the recent window, or from `want`), then its backlog, then live."""
        sink = joiner.sink
        parts = await self._catch_up(joiner.want, position)
        if self.joiners.get(sink.sid) is not joiner:
            return  # left meanwhile
        delivered = position if joiner.want is None else max(position, joiner.want)
        for batch, sma in _rebatch(parts, self.config.max_batch if joiner.want is not None
                                   else max(self.config.max_batch, self.config.recent_ticks)):
            size = await sink.send(ticks_packet(self.name, self._schema, batch, sma,
                                                sink.encoding))
            self.metrics.sent(batch.num_rows, size)
        with contextlib.suppress(Exception):
            await sink.emit("status", self.status_payload())
        # Whatever arrived meanwhile, cut to where this member is, until nothing is left
        # (no await between the last check and going live: nothing can slip in between).
        while joiner.backlog:
            item = joiner.backlog.pop(0)
            if self.joiners.get(sink.sid) is not joiner:
                return
            if item.event != "ticks":
                with contextlib.suppress(Exception):
                    await sink.emit(item.event, item.data)
                continue
            if item.next <= delivered:
                continue
            item = self._cut(item, delivered, count=False)
            delivered = item.next
            assert item.batch is not None
            if item.batch.num_rows:
                size = await sink.send(self._packet(item, sink.encoding))
                self.metrics.sent(item.batch.num_rows, size)
        if self.joiners.pop(sink.sid, None) is not joiner:
            return
        if self.finished:
            self.on_detach(sink.sid)
        else:
            self.sinks.append(sink)

    async def _catch_up(self, want: int | None, position: int
                        ) -> list[tuple[pa.RecordBatch, np.ndarray]]:
        """Positions [want, position), or the recent window, from memory or the log."""
        window = self._recent if self._recent and self._recent[-1][1] == position else None
        lap_start = vpos(position // LAP, 0)
        if want is None:
            # The window as Channel keeps it: full, or all since the lap began. A relay that
            # joined the broadcast late holds less: the rest comes from the log.
            if window is not None and (self._recent_rows >= self.config.recent_ticks
                                       or window[0][0] <= lap_start):
                return [(b, s) for _, _, b, s in window]
            start = max(lap_start, position - self.config.recent_ticks)
        else:
            start = want
        if start >= position:
            return []
        if window is not None and window[0][0] <= start:
            out = []
            for _prev, next_, batch, sma in window:
                if next_ <= start:
                    continue
                seqs = vpos((next_ - 1) // LAP, batch.column(0).to_numpy())
                first = int(np.searchsorted(seqs, start))
                out.append((batch.slice(first), sma[first:]))
            return out
        return await asyncio.to_thread(self._read, start % LAP, position - start)


def _final_seq(item: Item) -> int | None:
    """Where the broadcast ended, for `end` and the `status` (ended, no reason) before it."""
    data = item.data if isinstance(item.data, dict) else {}
    if item.event == "end" and isinstance(data.get("last_seq"), int):
        return int(data["last_seq"]) + 1
    if item.event == "status" and data.get("state") == "ended" and not data.get("reason") \
            and isinstance(data.get("seq"), int):
        return int(data["seq"])
    return None


def _rebatch(parts: list[tuple[pa.RecordBatch, np.ndarray]], rows: int
             ) -> list[tuple[pa.RecordBatch, np.ndarray]]:
    """Parts joined, then cut into batches of at most `rows`."""
    parts = [(b, s) for b, s in parts if b.num_rows]
    if not parts:
        return []
    batch = pa.Table.from_batches([b for b, _ in parts]).combine_chunks().to_batches()[0]
    sma = np.concatenate([s for _, s in parts])
    return [(batch.slice(lo, rows), sma[lo:lo + rows]) for lo in range(0, batch.num_rows, rows)]


def _lap_spans(start: int, stop: int, events: int) -> list[tuple[int, int]]:
    """[start, stop) split where a looping broadcast wrapped (each span within one lap)."""
    spans = []
    while start < stop:
        lap_end = (start // LAP) * LAP + events
        if stop <= lap_end or stop // LAP == start // LAP:
            spans.append((start, stop))
            break
        spans.append((start, lap_end))
        start = (start // LAP + 1) * LAP
    return spans
