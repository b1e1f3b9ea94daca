"""The replay server: python-socketio AsyncServer on an aiohttp app, every client's stream and
the broadcasts (docs/protocol.md); its HTTP routes are in replayer/http.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web
from redis.exceptions import RedisError

from recorder.errors import TicktapeError
from recorder.log import Log, LogInfo
from replayer.alerting import Alerting
from replayer.broadcast import Channel
from replayer.catalog import Catalog
from replayer.config import ServerConfig
from replayer.encoding import MALFORMED_EVENT, RESERVED_PREFIX, FastPacket
from replayer.errors import BadRequest, NotAllowed, ReplayError, Unavailable, safe_message, shown
from replayer.fleet import Fleet, FleetBroadcast
from replayer.http import STATE, STATIC, add_routes, guard, token_matches
from replayer.metrics import SYNC_INTERVAL, Metrics
from replayer.own_stream import ClientStream
from replayer.protocol import SubscribeRequest, parse_control, parse_subscribe
from replayer.sinks import ClientSink
from replayer.webhook import Webhooks

__all__ = ["STATE", "STATIC", "ReplayServer", "make_app", "token_from_env"]

logger = logging.getLogger(__name__)


def _ack_errors(handler: Callable[..., Awaitable[dict[str, Any]]]
                ) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Every client event returns an acknowledgement; nothing a client sends crashes the server."""

    @functools.wraps(handler)
    async def wrapper(self: ReplayServer, sid: str, *args: Any) -> dict[str, Any]:
        try:
            if len(args) > 1:
                raise BadRequest(f"expected one payload object, got {len(args)} arguments")
            async with self.client_lock(sid):
                return await handler(self, sid, args[0] if args else None)
        except ReplayError as exc:  # built by us: client input escaped, log paths replaced
            self.metrics.errors[exc.code] += 1
            return _error_ack(exc.code, str(exc))
        except TicktapeError as exc:  # a damaged log, found while opening it
            self.metrics.errors["log_error"] += 1
            return _error_ack("log_error", self.catalog.public(str(exc)))
        except Exception:
            logger.exception("handler %s failed", handler.__name__)
            self.metrics.errors["internal"] += 1
            return {"ok": False, "error": {"code": "internal", "message": "internal error"}}

    return wrapper


def _error_ack(code: str, message: str) -> dict[str, Any]:
    """Messages may quote client input (escaped by `shown`) and name logs (paths replaced):
    `safe_message` is the last guard, so the ack always encodes and stays small."""
    return {"ok": False, "error": {"code": code, "message": safe_message(message)}}


def _refreshed_info(log: Log) -> LogInfo:
    """Re-scan and summarize a log (file I/O: called in a worker thread)."""
    log.refresh()
    return log.info()


class ReplayServer:
    """Owns the catalog, the Socket.IO server and every client's stream."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.catalog = Catalog(config.path)
        self.metrics = Metrics()
        self.webhooks = Webhooks(
            config.alert_webhooks, metrics=self.metrics, timeout=config.webhook_timeout,
            retries=config.webhook_retries, backoff=config.webhook_backoff,
            queue_size=config.webhook_queue) if config.alert_webhooks else None
        self.alerting = Alerting(config.alert_rules,
                                 None if self.webhooks is None else self.webhooks.offer)
        origins: Any = list(config.cors_origins) or []
        if "*" in config.cors_origins:
            origins = "*"
        # Fleet mode: broadcasts through Redis (replayer/fleet.py), and WebSocket only: a
        # polling client's requests would land on different processes without sticky sessions.
        self.fleet = None if config.redis_url is None else Fleet(
            config=config, metrics=self.metrics, on_detach=self._detach)
        fleet_options: dict[str, Any] = {} if self.fleet is None else {
            "client_manager": self.fleet.manager, "transports": ["websocket"]}
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", serializer=FastPacket, cors_allowed_origins=origins,
            logger=False, engineio_logger=False, max_http_buffer_size=64 * 1024, **fleet_options)
        if self.fleet is not None:
            self.fleet.attach(self.sio)
        self.streams: dict[str, ClientStream] = {}  # sid -> its own stream
        # sid -> the broadcast it listens to (a FleetBroadcast in fleet mode)
        self.members: dict[str, Channel | FleetBroadcast] = {}
        self.channels: dict[tuple[Any, ...], Channel] = {}  # broadcast key -> playing channel
        # Finding or starting a channel spans awaits (its first read): two first subscribers
        # of the same broadcast would otherwise start two channels.
        self._channels_lock = asyncio.Lock()
        # python-socketio runs every event as its own task: without a per-client lock, two
        # quick seeks (or subscribes) could finish out of order and leave the stream at the
        # older one. asyncio.Lock wakes waiters in FIFO order, so events apply as they came.
        self._locks: dict[str, asyncio.Lock] = {}
        self._register()

    def client_lock(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    # -- Socket.IO -----------------------------------------------------------------------
    def _register(self) -> None:
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on("subscribe", self.on_subscribe)
        self.sio.on("control", self.on_control)
        self.sio.on("unsubscribe", self.on_unsubscribe)
        self.sio.on("*", self.on_unknown)

    def _authorized(self, environ: dict[str, Any], auth: Any) -> bool:
        if self.config.token is None:
            return True
        offered = auth.get("token") if isinstance(auth, dict) else None
        if offered is None:
            offered = parse_qs(environ.get("QUERY_STRING", "")).get("token", [None])[0]
        return token_matches(offered, self.config.token)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not self._authorized(environ, auth):
            self.metrics.errors["unauthorized"] += 1
            raise socketio.exceptions.ConnectionRefusedError(
                "a valid token is required", {"code": "unauthorized"})
        self.metrics.clients += 1

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.metrics.clients -= 1
        async with self.client_lock(sid):  # after any subscribe still being handled
            await self._drop(sid)
        self._locks.pop(sid, None)

    async def _drop(self, sid: str) -> None:
        """Whatever the client receives ends here: its own stream, or its membership."""
        self.metrics.queue_depth.pop(sid, None)
        stream = self.streams.pop(sid, None)
        if stream is not None:
            await stream.close()
        channel = self.members.pop(sid, None)
        if isinstance(channel, FleetBroadcast):
            assert self.fleet is not None
            await self.fleet.leave(channel, sid)
        elif channel is not None:
            channel.leave(sid)
            if channel.members == 0:
                self._forget_channel(channel)
                await channel.close()

    def _forget_channel(self, channel: Channel) -> None:
        """Later subscribers start a new channel (called on its end, failure or emptiness)."""
        for key, known in list(self.channels.items()):
            if known is channel:
                del self.channels[key]

    def _detach(self, channel: Channel | FleetBroadcast, sid: str) -> None:
        """The channel dropped a slow consumer: the client holds no stream any more."""
        if self.members.get(sid) is channel:
            del self.members[sid]

    @_ack_errors
    async def on_subscribe(self, sid: str, payload: Any) -> dict[str, Any]:
        request = parse_subscribe(payload)
        request = replace(request, alerts=self.alerting.select(request.alerts))
        if request.alerts and request.broadcast and self.fleet is not None:
            raise BadRequest("alerts are not available on a fleet broadcast (--redis) yet; "
                             "subscribe with mode 'stream' for alerts")
        if request.broadcast and request.from_seq and self.fleet is None:
            raise BadRequest("broadcast streams start where the shared clock is; "
                             "from_seq applies to mode 'stream' (or to a fleet's broadcast)")
        log = self.catalog.get(request.log)
        info = await asyncio.to_thread(_refreshed_info, log)
        if request.from_seq > info.events:
            raise BadRequest(f"from_seq {request.from_seq} is beyond the log's end "
                             f"({info.events} events)")
        if request.symbols:
            unknown = set(request.symbols) - set(info.symbols)
            if unknown:
                raise BadRequest(f"symbols not in log {log.name}: "
                                 f"{', '.join(shown(s) for s in sorted(unknown)[:5])}")
        await self._drop(sid)  # a new subscribe replaces the current stream
        sink = ClientSink(self.sio, sid, request.encoding)
        if request.broadcast and self.fleet is not None:
            try:
                self.members[sid] = await self.fleet.join(log, request, sink)
            except ValueError as exc:  # from_seq too far behind the broadcast
                raise BadRequest(str(exc)) from exc
            except RedisError as exc:
                raise Unavailable("the fleet's Redis cannot be reached; try again") from exc
        elif request.broadcast:
            channel = await self._channel(log, request)
            channel.join(sink)
            self.members[sid] = channel
        else:
            stream = ClientStream(log=log, request=request, config=self.config,
                                  metrics=self.metrics, sink=sink, alerting=self.alerting)
            await stream.start()  # LogError if the log cannot be read from from_seq
            self.streams[sid] = stream
        return {"ok": True, "log": info.to_json() | {"path": None},
                "mode": "broadcast" if request.broadcast else "stream"}

    async def _channel(self, log: Log, request: SubscribeRequest) -> Channel:
        """The playing channel for this broadcast, started if there is none. Registered only
        once started: a channel that cannot start leaves nothing behind for later joiners
        (each of them tries again, and gets the error too)."""
        key = (log.name, request.speed, request.sma, request.symbols, request.loop,
               request.alerts)
        async with self._channels_lock:
            channel = self.channels.get(key)
            if channel is not None and channel.state != "ended":
                return channel
            channel = Channel(log=log, request=request, config=self.config,
                              metrics=self.metrics, on_detach=self._detach,
                              on_finish=self._forget_channel, alerting=self.alerting)
            await channel.start()
            self.channels[key] = channel
            return channel

    @_ack_errors
    async def on_control(self, sid: str, payload: Any) -> dict[str, Any]:
        request = parse_control(payload)
        if sid in self.members:
            raise NotAllowed("a broadcast plays on a shared clock; subscribe with mode "
                             "'stream' to control your own")
        stream = self.streams.get(sid)
        if stream is None:
            raise NotAllowed("no stream: subscribe first")
        state, seq = await stream.control(request)
        return {"ok": True, "state": state, "seq": seq}

    @_ack_errors
    async def on_unsubscribe(self, sid: str, payload: Any) -> dict[str, Any]:
        if payload not in (None, {}):
            raise BadRequest("unsubscribe takes an empty object")
        had = sid in self.streams or sid in self.members
        await self._drop(sid)
        return {"ok": True, "unsubscribed": had}

    async def on_unknown(self, event: Any, sid: str, *args: Any) -> dict[str, Any]:
        self.metrics.errors["bad_request"] += 1
        if event == MALFORMED_EVENT:
            message = "payload is not valid JSON or not an event: expected [name, payload]"
        else:
            name = event.removeprefix(RESERVED_PREFIX) if isinstance(event, str) else event
            message = f"unknown event {shown(name)}; events: subscribe, control, unsubscribe"
        return _error_ack("bad_request", message)

    # -- lifecycle ----------------------------------------------------------------------
    async def shutdown(self) -> None:
        """SIGTERM: every stream ends with a status, every client is disconnected."""
        players: dict[int, ClientStream | Channel | FleetBroadcast] = {
            id(s): s for s in self.streams.values()}
        players |= {id(c): c for c in [*self.members.values(), *self.channels.values()]}
        await asyncio.gather(*(p.shutdown() for p in players.values()), return_exceptions=True)
        self.streams.clear()
        self.members.clear()
        self.channels.clear()
        if self.fleet is not None:
            await self.fleet.shutdown()
        for sid in list(self.sio.manager.get_participants("/", None)):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid[0])


def make_app(config: ServerConfig) -> web.Application:
    """Build the application; the caller runs it (web.run_app or an AppRunner in tests)."""
    server = ReplayServer(config)
    app = web.Application(middlewares=[guard])
    app[STATE] = server
    server.sio.attach(app)  # /socket.io/ before the HTTP routes' catch-all
    add_routes(app, server.catalog, server.metrics.errors)

    async def _on_shutdown(app: web.Application) -> None:
        await server.shutdown()

    app.on_shutdown.append(_on_shutdown)
    app.cleanup_ctx.append(_background)
    if server.webhooks is not None:
        app.cleanup_ctx.append(server.webhooks.lifetime)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The fleet's Redis listener, and the copy of metrics into the shared files under
    --workers: started with the app, stopped (after the shutdown of every stream) with it."""
    server = app[STATE]
    if server.fleet is not None:
        await server.fleet.start()
    sync = asyncio.create_task(_sync_metrics(server.metrics)) \
        if server.metrics.multiprocess else None
    yield
    if sync is not None:
        sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync
    if server.fleet is not None:
        await server.fleet.close()


async def _sync_metrics(metrics: Metrics) -> None:
    while True:
        metrics.sync()
        await asyncio.sleep(SYNC_INTERVAL)


def token_from_env(explicit: str | None) -> str | None:
    return explicit if explicit is not None else os.environ.get("TICKTAPE_TOKEN") or None
