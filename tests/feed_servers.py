"""Local exchanges for tests: WebSocket + REST servers on 127.0.0.1 that speak Binance's,
Coinbase Exchange's and Kraken's documented public trade formats (see docs/feeds.md for the
sources), driven from the test: publish trades live, skip some, drop or mute connections,
break REST."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

__all__ = ["VENUE_SYMBOLS", "Exchange", "Tape", "TapeTrade", "start_exchange"]

# (what the test passes to --symbols, the venue's wire symbol, the log's BASE-QUOTE)
VENUE_SYMBOLS: dict[str, list[tuple[str, str, str]]] = {
    "binance": [("BTCUSDT", "BTCUSDT", "BTC-USDT"), ("ETH-USDT", "ETHUSDT", "ETH-USDT")],
    "coinbase": [("BTC-USD", "BTC-USD", "BTC-USD"), ("ETH-USD", "ETH-USD", "ETH-USD")],
    "kraken": [("BTC/USD", "BTC/USD", "BTC-USD"), ("ETH-USD", "ETH/USD", "ETH-USD")],
}
KRAKEN_REST_KEYS = {"BTCUSD": "XXBTZUSD", "ETHUSD": "XETHZUSD"}
START_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z


@dataclass(frozen=True)
class TapeTrade:
    wire: str  # the venue's symbol
    name: str  # BASE-QUOTE, as the log must hold it
    trade_id: int
    ts_ns: int
    price: float
    size: float
    side: str  # the taker's side

    def row(self) -> tuple[Any, ...]:
        """The row the log must hold for this trade."""
        return (self.name, str(self.trade_id), self.ts_ns, self.price, self.size, self.side)


class Tape:
    """A seeded stream of trades: ids sequential per symbol, times increasing across symbols
    (whole milliseconds for Binance, which publishes ms; microseconds otherwise)."""

    def __init__(self, venue: str, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.symbols = VENUE_SYMBOLS[venue]
        self.step = 1_000_000 if venue == "binance" else 1_000
        self.clock = START_NS
        self.next_id = {wire: 1_000 * (i + 1) for i, (_, wire, _) in enumerate(self.symbols)}
        self.price = {wire: 100.0 * (i + 1) for i, (_, wire, _) in enumerate(self.symbols)}

    def take(self, n: int, only: int | None = None) -> list[TapeTrade]:
        """n trades of random symbols (or all of symbol number `only`)."""
        out = []
        for _ in range(n):
            _, wire, name = self.rng.choice(self.symbols) if only is None else self.symbols[only]
            self.clock += self.step * self.rng.randint(1, 50)
            self.price[wire] = max(1.0, round(self.price[wire] + self.rng.choice((-1, 1)) * 0.01, 2))
            trade_id = self.next_id[wire]
            self.next_id[wire] += 1
            out.append(TapeTrade(wire, name, trade_id, self.clock, self.price[wire],
                                 round(self.rng.uniform(0.001, 2.0), 6),
                                 self.rng.choice(("buy", "sell"))))
        return out


def _iso(ns: int, digits: int = 6) -> str:
    stamp = datetime.fromtimestamp(ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ns % 10**9:09d}"[: len(stamp) + 1 + digits] + "Z"


class Exchange:
    """One venue's servers. Every control method is called from the test's thread."""

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self.known = {wire for _, wire, _ in VENUE_SYMBOLS[venue]}
        self.history: dict[str, list[TapeTrade]] = {w: [] for w in self.known}
        self.clients: list[tuple[web.WebSocketResponse, set[str]]] = []
        self.connections = 0
        self.subscriptions = 0
        self.probes = 0
        self.rest_requests: list[str] = []
        self.rest_fails = False
        self.muted: set[int] = set()  # ids of connections that get no message any more
        self.accepting = True
        self.subscribe_messages: list[Any] = []
        self.loop: asyncio.AbstractEventLoop
        self.ws_url = ""
        self.rest_url = ""
        self.changed = threading.Condition()

    # -- control, from the test's thread ---------------------------------------------------
    def _call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def publish(self, trades: list[TapeTrade]) -> None:
        """Trades happen: into the REST history, and live to every subscribed client."""
        async def go() -> None:
            for t in trades:
                self.history[t.wire].append(t)
                for ws, subscribed in list(self.clients):
                    if t.wire in subscribed and id(ws) not in self.muted and not ws.closed:
                        await ws.send_json(self._wire(t))
        self._call(go)

    def skip(self, trades: list[TapeTrade]) -> None:
        """Trades happen but the stream drops them: only REST knows them."""
        def go() -> None:
            for t in trades:
                self.history[t.wire].append(t)
        self._call(go)

    def drop(self) -> None:
        async def go() -> None:
            for ws, _ in list(self.clients):
                await ws.close()
        self._call(go)

    def shutdown_notice(self) -> None:
        """Binance: the documented serverShutdown event, the connection left open."""
        async def go() -> None:
            for ws, _ in list(self.clients):
                await ws.send_json({"e": "serverShutdown", "E": int(time.time() * 1000)})
        self._call(go)

    def mute(self) -> None:
        """Current connections stay open but receive nothing more (not even pongs)."""
        self._call(lambda: self.muted.update(id(ws) for ws, _ in self.clients))

    def wait(self, predicate: Callable[[Exchange], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.venue} exchange: timed out waiting "
                                         f"(connections {self.connections}, subscriptions "
                                         f"{self.subscriptions}, probes {self.probes})")
                self.changed.wait(min(left, 0.1))

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    # -- wire formats --------------------------------------------------------------------------
    def _wire(self, t: TapeTrade) -> dict[str, Any]:
        if self.venue == "binance":
            ms = t.ts_ns // 1_000_000
            return {"e": "trade", "E": ms + 1, "s": t.wire, "t": t.trade_id, "p": f"{t.price:.8f}",
                    "q": f"{t.size:.8f}", "T": ms, "m": t.side == "sell", "M": True}
        if self.venue == "coinbase":
            return {"type": "match", "trade_id": t.trade_id, "sequence": 50_000 + t.trade_id,
                    "maker_order_id": str(uuid.uuid4()), "taker_order_id": str(uuid.uuid4()),
                    "time": _iso(t.ts_ns), "product_id": t.wire, "size": f"{t.size:.8f}",
                    "price": f"{t.price:.2f}", "side": "sell" if t.side == "buy" else "buy"}
        return {"channel": "trade", "type": "update", "data": [self._kraken(t)]}

    @staticmethod
    def _kraken(t: TapeTrade) -> dict[str, Any]:
        return {"symbol": t.wire, "side": t.side, "price": t.price, "qty": t.size,
                "ord_type": "limit", "trade_id": t.trade_id, "timestamp": _iso(t.ts_ns)}

    # -- WebSocket -----------------------------------------------------------------------------
    def refuse(self, refusing: bool = True) -> None:
        """New WebSocket connections are refused (HTTP 503) until refuse(False)."""
        self._call(lambda: setattr(self, "accepting", not refusing))

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="unavailable")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        self._notify()
        subscribed: set[str] = set()
        entry = (ws, subscribed)
        self.clients.append(entry)
        heartbeat = asyncio.create_task(self._heartbeats(ws, subscribed))
        if self.venue == "kraken":
            await ws.send_json({"channel": "status", "type": "update", "data": [
                {"version": "2.0.0", "system": "online", "api_version": "v2",
                 "connection_id": 123456789}]})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                request_msg = msg.json()
                self.subscribe_messages.append(request_msg)
                if id(ws) in self.muted:
                    continue
                await getattr(self, f"_{self.venue}_request")(ws, subscribed, request_msg)
                self._notify()
        finally:
            heartbeat.cancel()
            self.clients.remove(entry)
        return ws

    async def _heartbeats(self, ws: web.WebSocketResponse, subscribed: set[str]) -> None:
        while not ws.closed:
            await asyncio.sleep(0.3)
            if id(ws) in self.muted or not subscribed or ws.closed:
                continue
            if self.venue == "kraken":
                await ws.send_json({"channel": "heartbeat"})
            elif self.venue == "coinbase":
                for wire in sorted(subscribed):
                    last = self.history[wire][-1].trade_id if self.history[wire] else 0
                    await ws.send_json({"type": "heartbeat", "sequence": 90, "last_trade_id": last,
                                        "product_id": wire, "time": _iso(time.time_ns())})

    async def _binance_request(self, ws: web.WebSocketResponse, subscribed: set[str],
                               msg: dict[str, Any]) -> None:
        if msg.get("method") == "SUBSCRIBE":
            streams = msg["params"]
            assert all(s.endswith("@trade") and s == s.lower() for s in streams), streams
            subscribed.update(s.split("@")[0].upper() for s in streams)
            await ws.send_json({"result": None, "id": msg["id"]})
            self.subscriptions += 1
        elif msg.get("method") == "LIST_SUBSCRIPTIONS":
            self.probes += 1
            await ws.send_json({"result": [f"{s.lower()}@trade" for s in sorted(subscribed)],
                                "id": msg["id"]})
        else:
            await ws.send_json({"code": 2, "msg": "Invalid request: unknown variant",
                                "id": msg.get("id")})

    async def _coinbase_request(self, ws: web.WebSocketResponse, subscribed: set[str],
                                msg: dict[str, Any]) -> None:
        assert msg["type"] == "subscribe" and "matches" in msg["channels"], msg
        bad = [p for p in msg["product_ids"] if p not in self.known]
        if bad:
            await ws.send_json({"type": "error", "message": "Failed to subscribe",
                                "reason": f"{bad[0]} is not a valid product"})
            await ws.close()
            return
        await ws.send_json({"type": "subscriptions", "channels": [
            {"name": name, "product_ids": msg["product_ids"]} for name in msg["channels"]]})
        for wire in msg["product_ids"]:  # documented: the first message is last_match
            if self.history[wire]:
                await ws.send_json({**self._wire(self.history[wire][-1]), "type": "last_match"})
        subscribed.update(msg["product_ids"])
        self.subscriptions += 1

    async def _kraken_request(self, ws: web.WebSocketResponse, subscribed: set[str],
                              msg: dict[str, Any]) -> None:
        now = _iso(time.time_ns())
        if msg.get("method") == "ping":
            self.probes += 1
            await ws.send_json({"method": "pong", "req_id": msg.get("req_id"), "time_in": now,
                                "time_out": now})
            return
        params = msg["params"]
        assert msg["method"] == "subscribe" and params["channel"] == "trade", msg
        for wire in params["symbol"]:
            if wire not in self.known:
                await ws.send_json({"error": f"Currency pair not supported {wire}",
                                    "method": "subscribe", "success": False, "symbol": wire,
                                    "time_in": now, "time_out": now, "req_id": msg.get("req_id")})
                continue
            await ws.send_json({"method": "subscribe", "result": {
                "channel": "trade", "snapshot": params.get("snapshot", False), "symbol": wire},
                "success": True, "time_in": now, "time_out": now, "req_id": msg.get("req_id")})
            if params.get("snapshot"):
                await ws.send_json({"channel": "trade", "type": "snapshot", "data": [
                    self._kraken(t) for t in self.history[wire][-50:]]})
            subscribed.add(wire)
        self.subscriptions += 1

    # -- REST ------------------------------------------------------------------------------------
    def _failing(self, request: web.Request) -> web.Response | None:
        self.rest_requests.append(str(request.rel_url))
        self._notify()
        if self.rest_fails:
            return web.json_response({"message": "internal error"}, status=500)
        return None

    async def binance_exchange_info(self, request: web.Request) -> web.Response:
        wanted = json.loads(request.query["symbols"])
        if any(w not in self.known for w in wanted):
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        return web.json_response({"timezone": "UTC", "serverTime": int(time.time() * 1000),
                                  "rateLimits": [], "exchangeFilters": [], "symbols": [
            {"symbol": w, "status": "TRADING", "baseAsset": w[:-4], "quoteAsset": w[-4:]}
            for w in wanted]})

    async def binance_trades(self, request: web.Request) -> web.Response:
        if (failed := self._failing(request)) is not None:
            return failed
        trades = self.history[request.query["symbol"]]
        limit = int(request.query.get("limit", 500))
        if "fromId" in request.query:
            page = [t for t in trades if t.trade_id >= int(request.query["fromId"])][:limit]
        else:
            page = trades[-limit:]
        return web.json_response([
            {"id": t.trade_id, "price": f"{t.price:.8f}", "qty": f"{t.size:.8f}",
             "quoteQty": f"{t.price * t.size:.8f}", "time": t.ts_ns // 1_000_000,
             "isBuyerMaker": t.side == "sell", "isBestMatch": True} for t in page])

    async def coinbase_trades(self, request: web.Request) -> web.Response:
        if (failed := self._failing(request)) is not None:
            return failed
        wire = request.match_info["product"]
        if wire not in self.known:
            return web.json_response({"message": "NotFound"}, status=404)
        limit = int(request.query.get("limit", 1000))
        newest_first = self.history[wire][::-1]
        if "after" in request.query:
            newest_first = [t for t in newest_first if t.trade_id < int(request.query["after"])]
        page = newest_first[:limit]
        headers = {"CB-BEFORE": str(page[0].trade_id), "CB-AFTER": str(page[-1].trade_id)} \
            if page else {}
        return web.json_response([
            {"time": _iso(t.ts_ns), "trade_id": t.trade_id, "price": f"{t.price:.2f}",
             "size": f"{t.size:.8f}", "side": "sell" if t.side == "buy" else "buy"}
            for t in page], headers=headers)

    async def kraken_trades(self, request: web.Request) -> web.Response:
        if (failed := self._failing(request)) is not None:
            return failed
        pair = request.query["pair"]
        wire = f"{pair[:3]}/{pair[3:]}"
        if wire not in self.known:
            return web.json_response({"error": ["EQuery:Unknown asset pair"]})
        since = int(request.query.get("since", 0))
        since_ns = since if since > 10**12 else since * 10**9
        count = int(request.query.get("count", 1000))
        page = [t for t in self.history[wire] if t.ts_ns > since_ns][:count]
        last = str(page[-1].ts_ns if page else since_ns)
        return web.json_response({"error": [], "result": {
            KRAKEN_REST_KEYS[pair]: [[f"{t.price:.5f}", f"{t.size:.8f}", t.ts_ns / 1e9,
                                      t.side[0], "l", "", t.trade_id] for t in page],
            "last": last}})

    def app(self) -> web.Application:
        app = web.Application()
        ws_path = {"binance": "/ws", "coinbase": "/", "kraken": "/v2"}[self.venue]
        app.router.add_get(ws_path, self.websocket)
        app.router.add_get("/api/v3/exchangeInfo", self.binance_exchange_info)
        app.router.add_get("/api/v3/historicalTrades", self.binance_trades)
        app.router.add_get("/products/{product}/trades", self.coinbase_trades)
        app.router.add_get("/0/public/Trades", self.kraken_trades)
        return app


def start_exchange(venue: str) -> tuple[Exchange, Callable[[], None]]:
    """Serve a fake `venue` on 127.0.0.1 (port 0) in a thread; returns it and a stopper."""
    exchange = Exchange(venue)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    exchange.loop = loop
    holder: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(exchange.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        exchange.rest_url = f"http://127.0.0.1:{port}"
        base = f"ws://127.0.0.1:{port}"
        exchange.ws_url = {"binance": base, "coinbase": base, "kraken": base + "/v2"}[venue]
        holder["runner"] = runner
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise AssertionError("fake exchange did not start")

    def stop() -> None:
        async def down() -> None:
            for ws, _ in list(exchange.clients):
                await ws.close()
            await holder["runner"].cleanup()
        asyncio.run_coroutine_threadsafe(down(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    return exchange, stop
