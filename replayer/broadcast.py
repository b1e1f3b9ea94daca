"""A broadcast channel: one replay on one shared clock, heard by every client that joins.

A late joiner first receives the recent window (the last `recent_ticks` ticks sent) at once,
then the live batches, with no gap (and the `alert` events of those live batches, when the
channel runs rules: its key includes them). A broadcast never waits for one client: one that holds
`BROADCAST_SLACK` windows of batches is dropped with a `status` saying so (`slow_consumer`),
detached from the channel, and can resubscribe with `from_seq` on its own clock. A channel
left without members stops.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from recorder.log import Log
from replayer.alerting import Alerting
from replayer.config import ServerConfig
from replayer.cursor import Chunk
from replayer.metrics import Metrics
from replayer.protocol import SubscribeRequest
from replayer.sinks import Sink
from replayer.stream import Player

__all__ = ["BROADCAST_SLACK", "Channel"]

BROADCAST_SLACK = 4  # a broadcast drops a client only past this many windows queued


class Channel(Player):
    """A shared replay; `on_detach(channel, sid)` hears of every member it drops, and
    `on_finish(channel)` of its end (the log's end, an error, or no members left)."""

    broadcast = True

    def __init__(self, *, log: Log, request: SubscribeRequest, config: ServerConfig,
                 metrics: Metrics, on_detach: Callable[[Channel, str], None],
                 on_finish: Callable[[Channel], None], alerting: Alerting | None = None) -> None:
        # Members may want either encoding: JSON columns are prepared for every chunk, and
        # batches stay at the JSON size.
        super().__init__(log=log, request=request, config=config, metrics=metrics,
                         max_batch=config.max_batch, prepare_json=True, alerting=alerting)
        self.on_detach, self.on_finish = on_detach, on_finish
        self.sinks: list[Sink] = []
        self._joiners: list[Sink] = []
        self._recent: deque[tuple[pa.RecordBatch, np.ndarray]] = deque()
        self._recent_rows = 0

    # -- membership ------------------------------------------------------------------------
    def audience(self) -> list[Sink]:
        return self.sinks + self._joiners

    @property
    def members(self) -> int:
        return len(self.sinks) + len(self._joiners)

    def join(self, sink: Sink) -> None:
        self._joiners.append(sink)
        self._wake()

    def leave(self, sid: str) -> None:
        self.sinks = [s for s in self.sinks if s.sid != sid]
        self._joiners = [s for s in self._joiners if s.sid != sid]
        self.metrics.queue_depth.pop(sid, None)

    async def _before_step(self) -> None:
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

    def _finished(self) -> None:
        self.on_finish(self)

    # -- sending ---------------------------------------------------------------------------
    async def _deliver(self, chunk: Chunk, start: int, stop: int) -> None:
        encoded: dict[str, str | list[object]] = {}
        dropped: list[Sink] = []
        heard: list[Sink] = []
        for sink in list(self.sinks):
            depth = sink.depth()
            self.metrics.queue_depth[sink.sid] = depth
            if depth >= BROADCAST_SLACK * self.window:
                dropped.append(sink)
                continue
            if sink.encoding not in encoded:
                encoded[sink.encoding] = self._encoded(chunk, start, stop, sink.encoding)
            size = await sink.send(encoded[sink.encoding])
            self.metrics.sent(stop - start, size)
            heard.append(sink)
        alerts = self._alerts(chunk, start, stop)
        self._alert_packets.append(len(alerts))
        if alerts:  # the channel's key includes its rules: every member asked for these
            await self._send_alerts(heard, alerts)
        for sink in dropped:
            await self._drop(sink)
        self._remember(chunk.batch.slice(start, stop - start), chunk.sma[start:stop])
        if not self.members:  # nobody left to hear it: stop instead of playing to no one
            self._closed = True
            self.on_finish(self)

    async def _drop(self, sink: Sink) -> None:
        """A slow consumer: tell it why, then detach it here and from the server."""
        self.leave(sink.sid)
        self.metrics.slow_consumers_dropped += 1
        self.on_detach(self, sink.sid)
        with contextlib.suppress(Exception):
            await sink.emit("status", self._status_payload(state="ended",
                                                           reason="slow_consumer"))

    def _remember(self, batch: pa.RecordBatch, sma: np.ndarray) -> None:
        """Keep the last `recent_ticks` ticks for late joiners."""
        self._recent.append((batch, sma))
        self._recent_rows += batch.num_rows
        while self._recent_rows - len(self._recent[0][0]) >= self.config.recent_ticks:
            self._recent_rows -= len(self._recent.popleft()[0])
