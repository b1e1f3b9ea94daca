"""Fleet mode (`ticktape replay --redis URL`): processes serving the same logs share
broadcasts through Redis (docs/operations.md#a-fleet).

A broadcast is one (log, speed, sma, symbols, loop). Every process holding members of it
keeps a `FleetBroadcast`: a `Relay` (its members) and a lease loop. Exactly one process of
the fleet plays it, the holder of its lease (`SET lease token NX PX ttl`, renewed every
`POLL` s): its `FleetChannel` publishes each batch to python-socketio's Redis channel as an
emit to the broadcast's room, in one Lua script that also checks the lease, compares and
sets the broadcast's position (the first seq not yet emitted) and publishes: a batch is
published exactly when the position moves past it. Every process's python-socketio manager
(`FleetManager`) hands the room's messages to its relay, which delivers them in order and
repairs loss and repetition by position (see relay.py).

A leader that dies stops renewing; within `LEASE_TTL` + `POLL` another process holding
members takes the lease and plays on from the recorded position. A leader that stops
(SIGTERM) hands the lease back at once. When no process has members any more (each
announces its members in a sorted set with an expiry), the leader stops and the broadcast's
keys go. If Redis restarts empty, the leader (or any process, if the leader is gone) writes
the position it knows back.

Keys, per broadcast (`{id}` keeps them in one cluster slot):
`ticktape:{id}:lease` (the leader's token), `ticktape:{id}:state` (hash: `next`, the first
position not yet emitted; `ended`), `ticktape:{id}:procs` (zset: process token -> expiry ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import socketio
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from recorder.log import Log
from replayer.config import ServerConfig
from replayer.fleet_channel import FleetChannel
from replayer.fleet_redis import (
    LEASE_TTL,
    MEMBERS_TTL,
    POLL,
    RETRY,
    ROOM_PREFIX,
    SCRIPTS,
    STATE_TTL,
    FleetManager,
    broadcast_id,
    ms,
    redis_options,
    redis_url,
)
from replayer.metrics import Metrics
from replayer.protocol import SubscribeRequest
from replayer.relay import LAP, Item, Relay, batch_from_json
from replayer.sinks import Sink

__all__ = ["Fleet", "FleetBroadcast"]

logger = logging.getLogger(__name__)


class FleetBroadcast:
    """One broadcast on this process: its members (relay) and, while it leads, its player."""

    def __init__(self, fleet: Fleet, log: Log, request: SubscribeRequest, bid: str) -> None:
        self.fleet, self.log, self.request, self.bid = fleet, log, request, bid
        self.room = ROOM_PREFIX + bid
        self.keys = [f"ticktape:{{{bid}}}:lease", f"ticktape:{{{bid}}}:state",
                     f"ticktape:{{{bid}}}:procs"]
        self.relay = Relay(log=log, request=request, config=fleet.config, metrics=fleet.metrics,
                           on_detach=self._detached)
        self.channel: FleetChannel | None = None
        self.closed = False
        self._ended = False
        # Held so it is not garbage-collected; cancelled by close().
        self._task: asyncio.Task[None] | None = None

    @property
    def members(self) -> int:
        return self.relay.members

    @property
    def leading(self) -> bool:
        return self.channel is not None

    def _detached(self, sid: str) -> None:
        self.fleet.on_detach(self, sid)

    # -- joining ---------------------------------------------------------------------------
    async def enter(self, start: int) -> None:
        """Find the broadcast in the fleet (or start it at `start`); the relay then knows
        where it is. Raises RedisError if Redis cannot be reached."""
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            verdict, value = await self._join("join", start)
            if verdict != "wait" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        if verdict == "wait":
            raise RedisError("the broadcast's lease is held but its position is unknown")
        position = int(value)
        self.relay.start(position)
        if verdict in ("start", "takeover"):
            await self._lead(position)
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name=f"fleet-{self.log.name}")

    async def _join(self, mode: str, start: int) -> tuple[str, str]:
        verdict, value = await self.fleet.script(
            "join", self.keys, self.fleet.token, start, ms(LEASE_TTL), ms(STATE_TTL),
            ms(MEMBERS_TTL), 1 if self.members or mode == "join" else 0, mode)
        return _text(verdict), _text(value)

    async def _lead(self, position: int) -> None:
        if self.channel is not None:
            return
        channel = FleetChannel(self, self.request, position)
        try:
            await channel.start()
        except Exception:
            with contextlib.suppress(RedisError):
                await self.fleet.script("stop", self.keys, self.fleet.token, "handover")
            raise
        self.channel = channel
        self.fleet.metrics.fleet_leading += 1
        self.fleet.metrics.fleet_takeovers += 1
        logger.info("leading broadcast %s of %s from seq %d", self.bid, self.log.name,
                    position % LAP)

    def lost_lead(self, channel: FleetChannel) -> None:
        if self.channel is channel:
            self.channel = None
            self.fleet.metrics.fleet_leading -= 1

    async def _stop_leading(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            self.fleet.metrics.fleet_leading -= 1
            await channel.close()

    def ended(self) -> None:
        """The leader's replay reached the end of the log (or failed): mark it ended."""
        self._ended = True
        channel = self.channel
        if channel is not None:
            self.lost_lead(channel)
        self.fleet.spawn(self._mark_ended())

    async def _mark_ended(self) -> None:
        for _ in range(50):
            try:
                await self.fleet.script("stop", self.keys, self.fleet.token, "ended")
                return
            except RedisError:
                await asyncio.sleep(RETRY)

    # -- the lease loop ----------------------------------------------------------------------
    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not self.closed:
            await asyncio.sleep(POLL)
            try:
                if self.channel is not None:
                    renewed = await self._renew(renewed)
                elif not self.members or self.relay.finished:
                    await self.fleet.forget(self)
                    return
                else:
                    await self._follow()
            except RedisError as exc:
                self.fleet.metrics.fleet_redis_errors += 1
                logger.warning("fleet: Redis unavailable (%s); retrying", exc)
                if self.channel is not None and loop.time() - renewed > LEASE_TTL:
                    await self._stop_leading()  # the lease has lapsed: another may lead now

    async def _renew(self, renewed: float) -> float:
        channel = self.channel
        assert channel is not None
        count = await self.fleet.script(
            "renew", self.keys, self.fleet.token, ms(LEASE_TTL), ms(STATE_TTL),
            ms(MEMBERS_TTL), 1 if self.members else 0, channel.published)
        if count == -1:
            await self._stop_leading()
        elif count == 0 and not self.members and \
                await self.fleet.script("stop", self.keys, self.fleet.token, "idle") == 1:
            await self._stop_leading()
            await self.fleet.forget(self)
        return asyncio.get_running_loop().time()

    async def _follow(self) -> None:
        known = -1 if self.relay.position is None else self.relay.position
        verdict, value = await self._join("poll", known)
        if verdict in ("takeover", "start"):
            await self._lead(int(value))
        elif verdict == "ended" and not self._ended:
            # The end went by while this process did not hear Redis: say it here.
            self._ended = True
            self.relay.offer(Item("status", self.relay.status_payload("ended")))
            self.relay.offer(Item("end", {"log": self.log.name, "last_seq": self.log.events - 1}))

    # -- stopping ----------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """This process stops: its members are told; the broadcast plays on elsewhere (the
        lease is handed back at once, so another process holding members takes over)."""
        if self.closed:
            return
        await self.relay.tell("status", self.relay.status_payload("ended", reason="shutdown"))
        await self.close(handover=True)

    async def close(self, handover: bool = False) -> None:
        self.closed = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        was_leading = self.channel is not None
        await self._stop_leading()
        await self.relay.close()
        with contextlib.suppress(RedisError):
            if was_leading or handover:
                await self.fleet.script("stop", self.keys, self.fleet.token, "handover")
            await self.fleet.script("join", self.keys, self.fleet.token, -1, ms(LEASE_TTL),
                                    ms(STATE_TTL), ms(MEMBERS_TTL), 0, "leave")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Fleet:
    """This process's part in the fleet: the Redis client, its broadcasts, and the routing of
    python-socketio's messages to them. `on_detach(broadcast, sid)` hears of members let go."""

    def __init__(self, *, config: ServerConfig, metrics: Metrics,
                 on_detach: Callable[[FleetBroadcast, str], None]) -> None:
        assert config.redis_url is not None
        self.config, self.metrics, self.on_detach = config, metrics, on_detach
        db = urlsplit(config.redis_url).path.strip("/") or "0"
        # Pub/sub channels are not per database: the database is part of the channel's name.
        self.channel = f"ticktape:{db}"
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.manager = FleetManager(config.redis_url, self.channel, self._route)
        self.redis = aioredis.Redis.from_url(redis_url(config.redis_url), **redis_options(),
                                             socket_timeout=2.0)
        self._scripts = {name: self.redis.register_script(text)
                         for name, text in SCRIPTS.items()}
        self.broadcasts: dict[str, FleetBroadcast] = {}
        self.sio: socketio.AsyncServer  # set by attach()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()  # fire-and-forget work, held until done

    def attach(self, sio: socketio.AsyncServer) -> None:
        self.sio = sio

    async def start(self) -> None:
        """Listen to Redis now, not at the first client (python-socketio's default). An
        unreachable Redis is reported, not fatal: own streams work without it, and every
        process reconnects by itself."""
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.manager.initialize()
        try:
            await self.redis.ping()  # type: ignore[misc]  # redis-py types it sync or async
        except RedisError as exc:
            parts = urlsplit(redis_url(self.config.redis_url or ""))
            logger.warning("fleet: Redis at %s://%s%s does not answer yet (%s); broadcasts "
                           "wait for it", parts.scheme, parts.hostname or "", parts.path, exc)

    async def script(self, name: str, keys: list[str], *args: Any) -> Any:
        return await self._scripts[name](keys=keys, args=list(args))

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _route(self, message: dict[str, Any]) -> bool:
        """A message for a broadcast room: to its relay here, if this process has one.
        True: handled (python-socketio's own delivery is skipped)."""
        room = message.get("room")
        if not isinstance(room, str) or not room.startswith(ROOM_PREFIX):
            return False
        member = self.broadcasts.get(room[len(ROOM_PREFIX):])
        if member is None:
            return True  # nobody here listens to it
        data = message.get("data") or [None]
        if message.get("event") == "ticks":
            positions = message.get("ticktape") or {}
            try:
                batch, sma = batch_from_json(data[0])
                member.relay.offer(Item("ticks", data[0], prev=int(positions["prev"]),
                                        next=int(positions["next"]), batch=batch, sma=sma))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("fleet: malformed ticks message for %s: %r", room, exc)
        else:
            member.relay.offer(Item(str(message.get("event")), data[0]))
        return True

    async def join(self, log: Log, request: SubscribeRequest, sink: Sink) -> FleetBroadcast:
        """Admit a member to the broadcast (found in the fleet, or started here)."""
        bid = broadcast_id(request)
        async with self._lock:  # one FleetBroadcast per broadcast on this process
            member = self.broadcasts.get(bid)
            if member is None or member.closed or member.relay.finished:
                member = FleetBroadcast(self, log, replace(request, from_seq=0,
                                                           encoding="json"), bid)
                self.broadcasts[bid] = member
                try:
                    await member.enter(request.from_seq)
                except BaseException:
                    self.broadcasts.pop(bid, None)
                    await member.close()
                    raise
        want = member.relay.at(request.from_seq) if request.from_seq else None
        member.relay.join(sink, want)
        return member

    async def leave(self, member: FleetBroadcast, sid: str) -> None:
        member.relay.leave(sid)  # the lease loop withdraws or stops the broadcast

    async def forget(self, member: FleetBroadcast) -> None:
        if self.broadcasts.get(member.bid) is member:
            del self.broadcasts[member.bid]
        await member.close()

    async def shutdown(self) -> None:
        await asyncio.gather(*(m.shutdown() for m in list(self.broadcasts.values())),
                             return_exceptions=True)
        self.broadcasts.clear()

    async def close(self) -> None:
        await self.shutdown()
        thread = getattr(self.manager, "thread", None)
        if isinstance(thread, asyncio.Task):
            thread.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await thread
        for task in list(self._tasks):
            task.cancel()
        for client in (self.redis, getattr(self.manager, "redis", None)):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
