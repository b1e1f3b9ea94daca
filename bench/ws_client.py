"""A lean Socket.IO client over one WebSocket (aiohttp): counts ticks and arrival times, so
the benchmark measures the server rather than a client library's parsing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pyarrow as pa


@dataclass
class Received:
    ticks: int = 0
    batches: int = 0
    ended: bool = False
    arrivals: list[tuple[float, int, int]] = field(default_factory=list)  # (wall, first ts, rows)
    last_ts: int = 0
    keep_arrivals: bool = False


@contextlib.asynccontextmanager
async def subscribed(url: str, subscribe: dict[str, Any]
                     ) -> AsyncIterator[tuple[aiohttp.ClientWebSocketResponse, float]]:
    """One WebSocket with the Engine.IO and Socket.IO handshakes done and `subscribe` sent
    (ack id 1, so its ack starts "431["); yields it and when the subscribe went out."""
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(
            ws_url, max_msg_size=0) as ws:
        await ws.receive()  # Engine.IO open
        await ws.send_str("40")
        await ws.receive()  # Socket.IO connect ack
        sent = time.perf_counter()
        await ws.send_str("421" + orjson.dumps(["subscribe", subscribe]).decode())
        yield ws, sent


async def run_client(url: str, subscribe: dict[str, Any], *, limit_s: float = 600,
                     keep_arrivals: bool = False, until_ticks: int | None = None) -> Received:
    out = Received(keep_arrivals=keep_arrivals)
    async with subscribed(url, subscribe) as (ws, _):
        deadline = time.monotonic() + limit_s
        pending_binary = False
        while time.monotonic() < deadline and not out.ended:
            msg = await ws.receive()
            now = time.perf_counter()
            if msg.type == aiohttp.WSMsgType.TEXT:
                text: str = msg.data
                if text == "2":
                    await ws.send_str("3")
                elif text.startswith('42["ticks"'):
                    batch = orjson.loads(text[2:])[1]
                    _count(out, now, len(batch["seq"]), batch["ts"][0], batch["ts"][-1])
                elif text.startswith("451-"):
                    pending_binary = True
                elif text.startswith('42["end"'):
                    out.ended = True
            elif msg.type == aiohttp.WSMsgType.BINARY and pending_binary:
                pending_binary = False
                table = pa.ipc.open_stream(msg.data).read_all()
                ts = table.column("ts").cast(pa.int64())
                _count(out, now, table.num_rows, ts[0].as_py(), ts[-1].as_py())
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
            if until_ticks is not None and out.ticks >= until_ticks:
                break
    return out


def _count(out: Received, now: float, rows: int, first_ts: int, last_ts: int) -> None:
    out.ticks += rows
    out.batches += 1
    out.last_ts = last_ts
    if out.keep_arrivals:
        out.arrivals.append((now, first_ts, rows))


async def many_clients(url: str, count: int, subscribe: dict[str, Any], seconds: float
                       ) -> list[Received]:
    tasks = [asyncio.create_task(run_client(url, subscribe, limit_s=seconds,
                                            keep_arrivals=True)) for _ in range(count)]
    return await asyncio.gather(*tasks)
