"""A Socket.IO client for `ticktape replay` that resumes a dropped stream gap-free (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import quote

import aiohttp
import numpy as np
import pyarrow as pa
import socketio

from recorder.errors import TicktapeError
from ticktape.batch import Batch, parse_batch

__all__ = ["Batch", "Client", "ClientError", "ConnectError", "ConnectionLost", "ServerError",
           "StreamEnded", "StreamError", "connect"]

class ClientError(TicktapeError):
    """Base of the client's errors."""


class ConnectError(ClientError):
    """The server cannot be reached."""


class ConnectionLost(ClientError):
    """The connection dropped and reconnecting failed for `reconnect_timeout` seconds."""

    exit_code = 1


class ServerError(ClientError):
    """The server answered with an error (an error ack, a refused connection, an HTTP error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server refused: {message} ({code})")
        self.code, self.message = code, message
        if code in ("internal", "log_error"):
            self.exit_code = 1  # the request was fine; the server or its log has a problem


class StreamError(ClientError):
    """The stream broke its contract: a gap, a repeat or a malformed batch."""

    exit_code = 1


class StreamEnded(StreamError):
    """The server ended the stream early: a `status` `ended` with a reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the server ended the stream: {reason}")
        self.reason = reason


@dataclass
class _Subscription:
    payload: dict[str, Any]
    next_seq: int  # the seq the stream must continue with (received, not yet yielded, counts)
    # Batches, then None (the end) or a ClientError to raise.
    queue: asyncio.Queue[Batch | ClientError | None] = field(default_factory=asyncio.Queue)
    paused: bool = False
    seeking: bool = False  # a seek is in flight: one jump is expected
    seek_to: int | None = None
    done: bool = False
    # A broadcast joined without from_seq starts where the shared clock is (its recent
    # window): its first batch may start at any seq; from then on every seq follows.
    anywhere: bool = False

    @property
    def filtered(self) -> bool:
        return "symbols" in self.payload


class Client:
    """One connection to a replay server; reconnects and resubscribes by itself (see `connect`)."""

    def __init__(self, url: str, *, token: str | None = None, reconnect_timeout: float = 30.0,
                 connect_timeout: float = 10.0, call_timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.token = token
        self.reconnect_timeout, self.connect_timeout = reconnect_timeout, connect_timeout
        self.call_timeout = call_timeout
        self.info: dict[str, Any] | None = None  # the last subscribe ack's log info
        self.status: dict[str, Any] | None = None  # the last status event
        self.statuses: list[dict[str, Any]] = []
        self.end: dict[str, Any] | None = None  # the `end` event of the current stream
        self.reconnects = 0
        self._http: aiohttp.ClientSession | None = None
        self._sio: socketio.AsyncClient | None = None
        self._lost = asyncio.Event()  # the current connection dropped
        self._up = asyncio.Event()  # connected (or failed for good: see _error)
        self._error: ClientError | None = None
        self._sub: _Subscription | None = None
        self._closing = False
        self._shutdown_seen = False
        # Held so the reconnect task is not garbage-collected mid-flight, and so close() can stop it.
        self._reconnecting: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self._http = aiohttp.ClientSession()
        try:
            await self._connect_once(self.connect_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect; a running subscription ends."""
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._sio is not None:
            with contextlib.suppress(Exception):
                await self._sio.disconnect()
        self._finish(None)
        if self._http is not None:
            await self._http.close()

    # -- connection ---------------------------------------------------------------------
    async def _connect_once(self, timeout: float) -> None:
        assert self._http is not None
        sio = socketio.AsyncClient(reconnection=False, http_session=self._http)
        refusals: list[Any] = []
        lost = asyncio.Event()
        sio.on("connect_error", lambda data=None: refusals.append(data))
        sio.on("disconnect", lambda *_: self._on_disconnect(sio, lost))
        sio.on("ticks", self._on_ticks)
        sio.on("status", self._on_status)
        sio.on("end", self._on_end)
        auth = {"token": self.token} if self.token else None
        try:
            await asyncio.wait_for(sio.connect(self.url, auth=auth, transports=["websocket"],
                                               wait_timeout=timeout), timeout)
        except BaseException as exc:  # also a cancelled attempt: leave no half-open socket
            with contextlib.suppress(Exception):
                await sio.disconnect()
            if not isinstance(exc, socketio.exceptions.ConnectionError | TimeoutError | OSError):
                raise
            refusal = refusals[-1] if refusals else None
            if isinstance(refusal, dict) and isinstance(refusal.get("data"), dict):
                raise ServerError(refusal["data"].get("code", "refused"),
                                  refusal.get("message", "connection refused")) from exc
            raise ConnectError(f"cannot connect to {self.url}: {exc or 'timed out'}") from exc
        self._sio, self._lost = sio, lost
        self._up.set()

    def _on_disconnect(self, sio: socketio.AsyncClient, lost: asyncio.Event) -> None:
        lost.set()
        if sio is not self._sio or self._closing:
            return
        self._sio = None
        self._up.clear()
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        deadline = time.monotonic() + self.reconnect_timeout
        delay, why = 0.05, "the connection dropped"
        while True:
            try:
                await self._connect_once(max(0.5, min(self.connect_timeout,
                                                      deadline - time.monotonic())))
                # Connecting takes network round trips, so every batch received on the old
                # connection has been handled by now: next_seq is final.
                sub = self._sub
                if sub is not None and not sub.done:
                    await self._resubscribe(sub)
                self.reconnects += 1
                self._shutdown_seen = False
                return
            except ServerError as exc:  # refused outright (token, log gone): retrying won't help
                self._give_up(exc)
                return
            except ClientError as exc:
                why = str(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
        cause = "the server shut down" if self._shutdown_seen else "the connection dropped"
        self._give_up(ConnectionLost(
            f"lost the connection to {self.url} ({cause}) and could not reconnect within "
            f"{self.reconnect_timeout:g} s: {why}"))

    async def _resubscribe(self, sub: _Subscription) -> None:
        if sub.seeking and sub.seek_to is not None:  # the seek was acknowledged; go there
            sub.next_seq, sub.seeking = sub.seek_to, False
        await self._call("subscribe", {**sub.payload, "from_seq": sub.next_seq})
        if sub.paused:
            await self._call("control", {"action": "pause"})

    def _give_up(self, error: ClientError) -> None:
        """The connection is gone for good: every call and the subscription raise `error`."""
        self._error = error
        self._up.set()
        self._finish(error)

    def _finish(self, item: ClientError | None) -> None:
        """End the current subscription with an error, or quietly with None."""
        sub, self._sub = self._sub, None
        if sub is not None and not sub.done:
            sub.done = True
            sub.queue.put_nowait(item)

    async def _call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self._error is None and self._sio is None:  # reconnecting: wait for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), self.reconnect_timeout + 1)
        if self._error is not None:
            raise self._error
        sio, lost = self._sio, self._lost
        if sio is None:
            raise ClientError(f"not connected to {self.url}")
        # A call whose connection drops is never answered: race the answer against the drop.
        answer = asyncio.ensure_future(sio.call(event, payload, timeout=self.call_timeout))
        dropped = asyncio.ensure_future(lost.wait())
        await asyncio.wait({answer, dropped}, return_when=asyncio.FIRST_COMPLETED)
        dropped.cancel()
        if not answer.done():
            answer.cancel()
            raise ClientError(f"the connection to {self.url} dropped before {event!r} was answered")
        try:
            ack = answer.result()
        except socketio.exceptions.SocketIOError as exc:
            raise ClientError(f"{self.url} did not answer {event!r}: {exc or 'timed out'}") from exc
        if not isinstance(ack, dict) or not ack.get("ok"):
            error = ack.get("error", {}) if isinstance(ack, dict) else {}
            raise ServerError(str(error.get("code", "unknown")), str(error.get("message", ack)))
        return ack

    # -- events (plain functions: python-socketio runs them in arrival order) ------------
    def _on_ticks(self, data: Any) -> None:
        sub = self._sub
        if sub is None or sub.done:
            return
        try:
            batch = parse_batch(data)
        except (KeyError, TypeError, ValueError, pa.ArrowException) as exc:
            self._finish(StreamError(f"malformed ticks batch from {self.url}: {exc!r}"))
            return
        if not len(batch):
            return
        first, steps = int(batch.seq[0]), np.diff(batch.seq)
        inside = bool(np.all(steps > 0) if sub.filtered else np.all(steps == 1))
        if sub.anywhere and first >= sub.next_seq:
            sub.anywhere = False
        elif first == sub.next_seq or (sub.filtered and first > sub.next_seq):
            if sub.seeking and first == sub.seek_to:
                sub.seeking = False
        elif sub.seeking and (sub.seek_to is None or first == sub.seek_to
                              or (sub.filtered and first >= sub.seek_to)):
            sub.seeking = False  # the seek's jump
        else:
            inside = False
        if not inside:
            self._finish(StreamError(
                f"stream of {batch.log} is not contiguous: expected seq {sub.next_seq}, got "
                f"{first}..{int(batch.seq[-1])} ({len(batch)} ticks)"))
            return
        sub.next_seq = int(batch.seq[-1]) + 1
        sub.queue.put_nowait(batch)

    def _on_status(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        self.status = data
        self.statuses.append(data)
        reason = data.get("reason")
        if data.get("state") == "ended" and reason and self._sub is not None:
            if reason == "shutdown":  # the connection drops next; reconnect and resume
                self._shutdown_seen = True
            else:
                self._finish(StreamEnded(str(reason)))

    def _on_end(self, data: Any) -> None:
        sub = self._sub
        if sub is None or sub.done:
            return
        self.end = data
        last = data.get("last_seq") if isinstance(data, dict) else None
        if not sub.filtered and last != sub.next_seq - 1:
            self._finish(StreamError(f"stream ended at seq {last} but the last seq received "
                                     f"was {sub.next_seq - 1}"))
        else:
            self._finish(None)

    # -- the API --------------------------------------------------------------------------
    async def logs(self) -> list[dict[str, Any]]:
        """GET /api/logs: the logs served, with their info."""
        return cast(list[dict[str, Any]], await self._get("/api/logs"))

    async def log(self, name: str) -> dict[str, Any]:
        """GET /api/logs/{name}: one log's info (ServerError `unknown_log` if not served)."""
        return cast(dict[str, Any], await self._get(f"/api/logs/{quote(name, safe='')}"))

    async def _get(self, path: str) -> Any:
        assert self._http is not None, "use `async with connect(...)`"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self._http.get(self.url + path, headers=headers) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise ConnectError(f"cannot get {self.url}{path}: {exc}") from exc
        if resp.status != 200:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ServerError(error.get("code", str(resp.status)), error.get("message", ""))
        return body

    async def subscribe(self, log: str, *, speed: float | str = 1.0, from_seq: int = 0,
                        symbols: list[str] | None = None, sma: int = 5,
                        encoding: Literal["json", "arrow"] = "json",
                        mode: Literal["stream", "broadcast"] = "stream") -> AsyncIterator[Batch]:
        """Stream `log` until `end`: every seq once, in order, across reconnects. A broadcast
        (`mode="broadcast"`) without `from_seq` starts where its shared clock is; after a
        reconnect it resumes with `from_seq` (a fleet's broadcast accepts it)."""
        payload: dict[str, Any] = {"log": log, "speed": speed, "from_seq": from_seq, "sma": sma,
                                   "encoding": encoding}
        if symbols:
            payload["symbols"] = list(symbols)
        if mode == "broadcast":
            payload["mode"] = mode
        self._finish(None)  # a new subscribe replaces the current stream
        sub = self._sub = _Subscription(payload, next_seq=from_seq,
                                        anywhere=mode == "broadcast" and not from_seq)
        self.end = None
        try:
            ack = await self._call("subscribe", payload)
        except ClientError:
            if self._sub is sub:
                self._sub = None
            raise
        self.info = ack["log"]
        while (item := await sub.queue.get()) is not None:
            if isinstance(item, ClientError):
                raise item
            yield item

    async def control(self, action: Literal["pause", "resume", "seek", "speed"], *,
                      seq: int | None = None, ts: str | None = None,
                      speed: float | str | None = None) -> dict[str, Any]:
        """Pause, resume, seek (seq or ISO 8601 ts) or change speed; returns the ack."""
        payload: dict[str, Any] = {"action": action}
        payload |= {k: v for k, v in (("seq", seq), ("ts", ts), ("speed", speed)) if v is not None}
        sub = self._sub
        if sub is not None and action == "seek":  # set before sending: the jump may come first
            sub.seeking, sub.seek_to = True, seq
        try:
            ack = await self._call("control", payload)
        except ClientError:
            if sub is not None and action == "seek":
                sub.seeking = False
            raise
        if sub is not None:
            if action == "speed":
                sub.payload["speed"] = speed
            elif action in ("pause", "resume"):
                sub.paused = action == "pause"
            elif action == "seek" and sub.seeking and sub.seek_to is None:
                sub.seek_to = int(ack["seq"])
        return ack

    async def unsubscribe(self) -> None:
        """Stop the current stream; its iterator ends."""
        self._finish(None)
        await self._call("unsubscribe", {})


def connect(url: str, token: str | None = None, *, reconnect_timeout: float = 30.0,
            connect_timeout: float = 10.0) -> Client:
    """`async with connect(url) as client:` — a connected Client, closed on exit."""
    return Client(url, token=token, reconnect_timeout=reconnect_timeout,
                  connect_timeout=connect_timeout)
