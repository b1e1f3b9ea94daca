"""The leader's side of a fleet broadcast (see fleet.py): `FleetChannel` plays it and
publishes each batch through Redis in order, `RoomSink` sends its other events to the
broadcast's room on every process."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
import socketio
from redis.exceptions import RedisError
from socketio import packet as sio_packet

from replayer.cursor import Chunk
from replayer.encoding import FastPacket
from replayer.fleet_redis import LEASE_TTL, RETRY, STATE_TTL, ms
from replayer.protocol import SubscribeRequest
from replayer.relay import LAP, Item, vpos
from replayer.sinks import Sink
from replayer.stream import Player

if TYPE_CHECKING:
    from replayer.fleet import FleetBroadcast

__all__ = ["FleetChannel", "RoomSink"]


class RoomSink:
    """The leader's `status`, `end` (and any event a replay sends besides ticks) for every
    member on every process: an emit to the broadcast's room through the manager."""

    encoding = "json"

    def __init__(self, sio: socketio.AsyncServer, room: str) -> None:
        self.sio, self.room, self.sid = sio, room, room

    def depth(self) -> int:
        return 0

    async def send(self, encoded: str | list[Any]) -> int:
        raise NotImplementedError("ticks go out through FleetChannel._deliver")

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data, room=self.room)


class FleetChannel(Player):
    """The leader's replay of a broadcast: each batch is published (see fleet_redis.PUBLISH), then
    handed to this process's relay. A lost lease stops it quietly: another process plays."""

    broadcast = True
    carries_extras = False  # relays rebuild batches from the six required columns

    def __init__(self, owner: FleetBroadcast, request: SubscribeRequest, position: int) -> None:
        fleet = owner.fleet
        super().__init__(log=owner.log, request=replace(request, from_seq=position % LAP),
                         config=fleet.config, metrics=fleet.metrics,
                         max_batch=fleet.config.max_batch, prepare_json=True)
        self.owner = owner
        self.lap = position // LAP
        self.published = position  # the broadcast's position: first not yet emitted
        self._room = RoomSink(fleet.sio, owner.room)

    def audience(self) -> list[Sink]:
        return [self._room]

    async def _seek(self, seq: int) -> None:
        await super()._seek(seq)
        self.lap += 1  # only a looping broadcast seeks: back to seq 0

    def _finished(self) -> None:
        self.owner.ended()

    async def _deliver(self, chunk: Chunk, start: int, stop: int) -> None:
        assert chunk.json is not None
        sma = chunk.sma[start:stop]
        payload = chunk.json.ticks(start, stop, sma)
        last = int(chunk.batch.column(0)[stop - 1].as_py())
        prev, nxt = self.published, vpos(self.lap, last) + 1
        fleet = self.owner.fleet
        assert fleet.manager is not None
        message = orjson.dumps({
            "method": "emit", "event": "ticks", "data": [payload], "binary": False,
            "namespace": "/", "room": self.owner.room, "skip_sid": None, "callback": None,
            "host_id": fleet.manager.host_id, "ticktape": {"prev": prev, "next": nxt}})
        while not self._closed:
            try:
                result = await fleet.script("publish", self.owner.keys, fleet.token, prev, nxt,
                                            fleet.channel, message, ms(LEASE_TTL), ms(STATE_TTL))
            except RedisError:
                fleet.metrics.fleet_redis_errors += 1
                await asyncio.sleep(RETRY)
                continue
            if result == -1:  # another process leads now: it plays on, this one stops
                self._closed = True
                self.owner.lost_lead(self)
                return
            break
        else:
            return
        self.published = nxt
        fleet.metrics.fleet_published += 1
        fleet.metrics.fleet_published_bytes += len(message)
        packet: str | list[Any] = FastPacket(sio_packet.EVENT, data=["ticks", payload],
                                             namespace="/").encode()
        self.owner.relay.offer(Item("ticks", prev=prev, next=nxt, packet=packet,
                                    batch=chunk.batch.slice(start, stop - start), sma=sma))
