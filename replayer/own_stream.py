"""A client's own replay: its own clock, its controls (pause, resume, seek, speed), and flow
control by the depth of its transport's queue (see stream.py)."""

from __future__ import annotations

import asyncio

from recorder.errors import TicktapeError
from recorder.log import Log
from replayer.alerting import Alerting
from replayer.config import ServerConfig
from replayer.cursor import Chunk
from replayer.errors import BadRequest, LogError
from replayer.metrics import Metrics
from replayer.protocol import ControlRequest, SubscribeRequest
from replayer.sinks import Sink
from replayer.stream import Player

__all__ = ["ClientStream"]


class ClientStream(Player):
    """One client's own replay: its own clock, its controls, and flow control."""

    def __init__(self, *, log: Log, request: SubscribeRequest, config: ServerConfig,
                 metrics: Metrics, sink: Sink, alerting: Alerting | None = None) -> None:
        arrow = request.encoding == "arrow"
        super().__init__(log=log, request=request, config=config, metrics=metrics,
                         max_batch=config.max_batch_arrow if arrow else config.max_batch,
                         prepare_json=not arrow, alerting=alerting)
        self.sink = sink

    def audience(self) -> list[Sink]:
        return [self.sink]

    async def _loop(self) -> None:
        await self._status()  # "playing" (or "ended" at once, at the end of the log)
        await super()._loop()

    async def _ready(self, epoch: int) -> bool:
        """Wait while the client's transport holds `window` batches or more."""
        sink = self.sink
        waited = False
        while True:
            depth = sink.depth()
            self.metrics.queue_depth[sink.sid] = depth
            if depth < self.window:
                return True
            if not waited:
                self.metrics.backpressure_waits += 1
                waited = True
            await asyncio.sleep(0.002)
            if self._closed or epoch != self._epoch or self.clock.paused:
                return False

    async def _deliver(self, chunk: Chunk, start: int, stop: int) -> None:
        size = await self.sink.send(self._encoded(chunk, start, stop, self.sink.encoding))
        self.metrics.sent(stop - start, size)
        alerts = self._alerts(chunk, start, stop)
        self._alert_packets.append(len(alerts))
        if alerts:
            await self._send_alerts([self.sink], alerts)

    async def control(self, req: ControlRequest) -> tuple[str, int]:
        """pause / resume / speed / seek; returns the state and the next seq to send, for the
        ack (nothing is sent between here and the ack: the next batch starts at that seq).
        LogError once the stream stopped on an error: its loop is gone, and a success here
        would never deliver."""
        if self.failed is not None:
            raise LogError(f"the stream stopped on an error; subscribe again: {self.failed}")
        now = asyncio.get_running_loop().time()
        if req.action == "pause":
            self.clock.pause(now)
            if self.state == "playing":
                self.state = "paused"
        elif req.action == "resume":
            self.clock.resume(now)
            if self.state == "paused":
                self.state = "playing"
        elif req.action == "speed":
            self.clock.set_speed(req.speed)
        elif req.action == "seek":
            seq = req.seq
            if seq is None:
                assert req.ts_ns is not None
                try:
                    seq = await asyncio.to_thread(self.log.seq_at_ts, req.ts_ns)
                except TicktapeError as exc:
                    raise LogError(self.public(str(exc))) from exc
            if seq > self.log.events:
                raise BadRequest(f"seek seq {seq} is beyond the log's end ({self.log.events} "
                                 "events)")
            await self._seek(seq)
        self._status_due = True
        self._wake()
        return self.state, self.position
