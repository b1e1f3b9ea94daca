"""One venue's WebSocket, kept open: connect, subscribe, read with a silence deadline, and
reconnect with exponential backoff and jitter whenever the connection is lost."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from recorder.feeds.errors import FeedProtocolError, FeedReconnect
from recorder.feeds.trades import Trade, Venue

__all__ = ["Backoff", "run_session"]

CONNECT_TIMEOUT = 10.0


@dataclass
class Backoff:
    """Delay before reconnect attempt n: half of min(cap, base·2ⁿ), plus a uniform random part
    of the other half ("equal jitter": never zero, yet many recorders do not retry in step).
    The RNG is injectable so tests get the same delays every run."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class _Silence(Exception):
    """No message within the silence timeout, even after a probe."""


async def run_session(venue: Venue, http: aiohttp.ClientSession, url: str, *,
                      silence_timeout: float, backoff: Backoff,
                      on_connect: Callable[[bool], None],
                      on_trades: Callable[[list[Trade]], None],
                      report: Callable[[str], None]) -> None:
    """Run until cancelled. FeedSubscribeError (a rejected subscription) propagates; every
    other failure (refused connection, close, silence, malformed message) reconnects."""
    subscribed_once = False
    while True:
        reason: str
        try:
            async with http.ws_connect(url, autoping=True, heartbeat=None,
                                       timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                                       max_msg_size=16 * 2**20) as ws:
                for message in venue.start(reconnect=subscribed_once):
                    await ws.send_str(orjson.dumps(message).decode())
                # Before the first message is read: the recorder starts buffering and
                # backfilling, so no trade of the new connection slips past it.
                on_connect(subscribed_once)
                reason = await _read(ws, venue, silence_timeout, on_trades, backoff)
                subscribed_once = subscribed_once or venue.subscribed
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
        except (FeedProtocolError, FeedReconnect) as exc:
            subscribed_once = subscribed_once or venue.subscribed
            reason = str(exc)
        except _Silence as exc:
            subscribed_once = subscribed_once or venue.subscribed
            reason = str(exc)
        delay = backoff.next()
        report(f"{venue.name}: connection lost ({reason}); reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)


async def _read(ws: aiohttp.ClientWebSocketResponse, venue: Venue, silence_timeout: float,
                on_trades: Callable[[list[Trade]], None], backoff: Backoff) -> str:
    """Read until the connection ends; returns why it ended."""
    last_message = time.monotonic()
    probed = False
    while True:
        probe_due = last_message + silence_timeout / 2
        deadline = last_message + silence_timeout
        now = time.monotonic()
        wait = (probe_due if not probed else deadline) - now
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout=max(wait, 0.001))
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise _Silence(f"no message for {silence_timeout:g} s") from None
            probe = None if probed else venue.probe()
            probed = True
            if probe is not None:
                await ws.send_str(orjson.dumps(probe).decode())
            continue
        recv_ns = time.time_ns()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            last_message, probed = time.monotonic(), False
            try:
                payload = orjson.loads(msg.data)
            except orjson.JSONDecodeError as exc:
                raise FeedProtocolError(f"{venue.name}: a message is not JSON") from exc
            was_subscribed = venue.subscribed
            trades = venue.handle(payload, recv_ns)
            if venue.subscribed and not was_subscribed:
                backoff.reset()
            if trades:
                on_trades(trades)
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                          aiohttp.WSMsgType.CLOSED):
            return f"server closed the connection (code {ws.close_code})"
        elif msg.type == aiohttp.WSMsgType.ERROR:
            return f"connection error: {ws.exception()}"
