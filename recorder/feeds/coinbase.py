"""Coinbase Exchange: the `matches` channel (plus `heartbeat`) and GET /products/{id}/trades.

Source: docs.cdp.coinbase.com/exchange/websocket-feed/overview (subscribe, `subscriptions`,
`error`), .../websocket-feed/channels ("Matches Channel": first message `last_match`;
"Match": `side` is the MAKER order side; "Heartbeat Channel"), .../rest-api/pagination
(`after` = older page, newest first, limit <= 1000) and the "Get product trades" reference
(`side` is the maker side there too).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from recorder.errors import ConfigError
from recorder.feeds.errors import FeedProtocolError, FeedRestError, FeedSubscribeError
from recorder.feeds.rest import get_json
from recorder.feeds.trades import Symbol, Trade, parse_rfc3339_ns, split_symbol

__all__ = ["Coinbase"]

PAGE = 1000
MAX_PAGES = 100
TAKER = {"sell": "buy", "buy": "sell"}  # the feed gives the maker's side; the log keeps the taker's


class Coinbase:
    name = "coinbase"
    default_ws = "wss://ws-feed.exchange.coinbase.com"
    default_rest = "https://api.exchange.coinbase.com"

    def __init__(self, symbols: list[str]) -> None:
        self.symbols: list[Symbol] = []
        for text in symbols:
            pair = split_symbol(text)
            if pair is None:
                raise ConfigError(f"coinbase product {text!r} must be BASE-QUOTE, e.g. BTC-USD")
            name = f"{pair[0]}-{pair[1]}"
            self.symbols.append(Symbol(name, name))
        self._by_wire = {s.wire: s for s in self.symbols}
        self._subscribed = False

    def ws_url(self, base: str) -> str:
        return base

    async def prepare(self, http: aiohttp.ClientSession, rest: str) -> None:
        return None  # an unknown product is refused by the subscription itself

    def start(self, *, reconnect: bool) -> list[dict[str, Any]]:
        self._subscribed = False
        return [{"type": "subscribe", "product_ids": [s.wire for s in self.symbols],
                 "channels": ["matches", "heartbeat"]}]

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def probe(self) -> dict[str, Any] | None:
        return None  # heartbeats arrive every second per product

    def handle(self, msg: Any, recv_ns: int) -> list[Trade]:
        if not isinstance(msg, dict):
            raise FeedProtocolError(f"coinbase: unexpected message {msg!r:.200}")
        kind = msg.get("type")
        if kind in ("match", "last_match"):
            return [self._trade(msg, recv_ns, "coinbase")]
        if kind == "subscriptions":
            self._subscribed = True
        elif kind == "error":
            text = f"coinbase: {msg.get('message')}: {msg.get('reason')}"
            if not self._subscribed:
                raise FeedSubscribeError(text)
            raise FeedProtocolError(text)
        return []

    def _trade(self, msg: dict[str, Any], recv_ns: int, where: str) -> Trade:
        try:
            symbol = self._by_wire[msg["product_id"]]
            return Trade(symbol.name, int(msg["trade_id"]), parse_rfc3339_ns(msg["time"], where),
                         float(msg["price"]), float(msg["size"]), TAKER[msg["side"]], recv_ns)
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedProtocolError(f"coinbase: malformed match {msg!r:.200}") from exc

    async def fetch_trades(self, http: aiohttp.ClientSession, rest: str, symbol: Symbol, *,
                           after_id: int, after_ts_ns: int, until_id: int | None) -> list[Trade]:
        # Pages run newest first; `after=N` asks for trades older than N (documented cursor).
        url = f"{rest.rstrip('/')}/products/{symbol.wire}/trades"
        out: dict[int, Trade] = {}
        cursor = None if until_id is None else until_id + 1
        for _ in range(MAX_PAGES):
            params = {"limit": str(PAGE)}
            if cursor is not None:
                params["after"] = str(cursor)
            _, body = await get_json(http, url, params)
            if not isinstance(body, list):
                raise FeedRestError(f"GET {url}: expected a list of trades")
            recv_ns = time.time_ns()
            try:
                page = [self._trade({**t, "product_id": symbol.wire}, recv_ns, url) for t in body]
            except FeedProtocolError as exc:
                raise FeedRestError(str(exc)) from exc
            for t in page:
                if t.trade_id > after_id and (until_id is None or t.trade_id <= until_id):
                    out[t.trade_id] = t
            if not page:
                break
            oldest = min(t.trade_id for t in page)
            if oldest <= after_id + 1:
                break
            cursor = oldest
        return sorted(out.values(), key=lambda t: t.trade_id)
