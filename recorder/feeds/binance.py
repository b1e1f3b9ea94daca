"""Binance spot: the `<symbol>@trade` stream (raw /ws + SUBSCRIBE) and GET /api/v3/historicalTrades.

Source: github.com/binance/binance-spot-api-docs, web-socket-streams.md ("Trade Streams",
"Live Subscribing", "serverShutdown") and rest-api.md ("Old trade lookup", "Exchange
information"); historicalTrades needs no API key since 2023-07-11 (CHANGELOG).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import orjson

from recorder.errors import ConfigError
from recorder.feeds.errors import (
    FeedProtocolError,
    FeedReconnect,
    FeedRestError,
    FeedSubscribeError,
)
from recorder.feeds.rest import get_json
from recorder.feeds.trades import Symbol, Trade, split_symbol

__all__ = ["Binance"]

log = logging.getLogger(__name__)

PAGE = 1000  # historicalTrades' maximum limit
MAX_PAGES = 100
# Only for spelling BTCUSDT as BTC-USDT when exchangeInfo cannot be reached.
_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL",
           "JPY", "GBP", "USD")


class Binance:
    name = "binance"
    default_ws = "wss://stream.binance.com:9443"
    default_rest = "https://api.binance.com"

    def __init__(self, symbols: list[str]) -> None:
        self._given = symbols
        self.symbols: list[Symbol] = []
        self._by_wire: dict[str, Symbol] = {}
        self._subscribed = False
        self._next_id = 1
        self._subscribe_id = 0

    def ws_url(self, base: str) -> str:
        return base.rstrip("/") + "/ws"

    async def prepare(self, http: aiohttp.ClientSession, rest: str) -> None:
        # The stream silently accepts unknown symbols; exchangeInfo is what rejects them.
        wires = []
        for text in self._given:
            pair = split_symbol(text)
            wires.append("".join(pair) if pair else text.upper())
        url = rest.rstrip("/") + "/api/v3/exchangeInfo"
        names: dict[str, str] = {}
        try:
            status, body = await get_json(http, url, {"symbols": orjson.dumps(wires).decode()},
                                          allow=(400,))
        except FeedRestError as exc:
            log.warning("binance: cannot check symbols (%s); recording them unchecked", exc)
        else:
            if status == 400:
                msg = body.get("msg") if isinstance(body, dict) else body
                code = body.get("code") if isinstance(body, dict) else None
                raise FeedSubscribeError(f"binance rejected --symbols {','.join(wires)}: {msg} "
                                         f"(code {code})")
            try:
                for item in body["symbols"]:
                    names[item["symbol"]] = f"{item['baseAsset']}-{item['quoteAsset']}"
            except (KeyError, TypeError) as exc:
                raise FeedSubscribeError(f"binance exchangeInfo has no symbols list: {exc}") from exc
            unknown = [w for w in wires if w not in names]
            if unknown:
                raise FeedSubscribeError(f"binance does not list {', '.join(unknown)}")
        for text, wire in zip(self._given, wires, strict=True):
            pair = split_symbol(text)
            name = names.get(wire) or (f"{pair[0]}-{pair[1]}" if pair else _guess(wire))
            self.symbols.append(Symbol(name, wire))
        self._by_wire = {s.wire: s for s in self.symbols}

    def start(self, *, reconnect: bool) -> list[dict[str, Any]]:
        self._subscribed = False
        self._subscribe_id = self._next_id
        self._next_id += 1
        return [{"method": "SUBSCRIBE", "params": [f"{s.wire.lower()}@trade" for s in self.symbols],
                 "id": self._subscribe_id}]

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def probe(self) -> dict[str, Any] | None:
        self._next_id += 1
        return {"method": "LIST_SUBSCRIPTIONS", "id": self._next_id}

    def handle(self, msg: Any, recv_ns: int) -> list[Trade]:
        if not isinstance(msg, dict):
            raise FeedProtocolError(f"binance: unexpected message {msg!r:.200}")
        if "stream" in msg and "data" in msg:  # combined-stream envelope
            msg = msg["data"]
        if "id" in msg and ("result" in msg or "code" in msg):
            if msg.get("id") == self._subscribe_id:
                if "code" in msg:
                    raise FeedSubscribeError(f"binance refused the subscription: {msg.get('msg')} "
                                             f"(code {msg.get('code')})")
                self._subscribed = True
            return []
        event = msg.get("e")
        if event == "trade":
            return [self._trade(msg, recv_ns)]
        if event == "serverShutdown":
            raise FeedReconnect("binance announced serverShutdown")
        return []

    def _trade(self, data: dict[str, Any], recv_ns: int) -> Trade:
        try:
            symbol = self._by_wire[data["s"]]
            return Trade(symbol.name, int(data["t"]), int(data["T"]) * 1_000_000, float(data["p"]),
                         float(data["q"]), "sell" if data["m"] else "buy", recv_ns)
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedProtocolError(f"binance: malformed trade {data!r:.200}") from exc

    async def fetch_trades(self, http: aiohttp.ClientSession, rest: str, symbol: Symbol, *,
                           after_id: int, after_ts_ns: int, until_id: int | None) -> list[Trade]:
        url = rest.rstrip("/") + "/api/v3/historicalTrades"
        out: list[Trade] = []
        from_id = after_id + 1
        for _ in range(MAX_PAGES):
            limit = PAGE if until_id is None else max(1, min(PAGE, until_id - from_id + 1))
            _, body = await get_json(http, url, {"symbol": symbol.wire, "fromId": str(from_id),
                                                 "limit": str(limit)})
            if not isinstance(body, list):
                raise FeedRestError(f"GET {url}: expected a list of trades")
            recv_ns = time.time_ns()
            try:
                page = [Trade(symbol.name, int(t["id"]), int(t["time"]) * 1_000_000,
                              float(t["price"]), float(t["qty"]),
                              "sell" if t["isBuyerMaker"] else "buy", recv_ns) for t in body]
            except (KeyError, TypeError, ValueError) as exc:
                raise FeedRestError(f"GET {url}: malformed trade: {exc}") from exc
            out.extend(t for t in page if t.trade_id > after_id
                       and (until_id is None or t.trade_id <= until_id))
            if len(page) < limit or not page:
                break
            from_id = max(t.trade_id for t in page) + 1
            if until_id is not None and from_id > until_id:
                break
        return sorted(out, key=lambda t: t.trade_id)


def _guess(wire: str) -> str:
    for quote in _QUOTES:
        if wire.endswith(quote) and len(wire) > len(quote):
            return f"{wire[:-len(quote)]}-{quote}"
    raise ConfigError(f"cannot tell base from quote in {wire!r}: give it as BASE-QUOTE, e.g. BTC-USDT")

