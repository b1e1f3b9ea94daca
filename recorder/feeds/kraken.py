"""Kraken spot: WebSocket v2 `trade` channel and GET /0/public/Trades.

Source: docs.kraken.com/exchange/api-reference/spot-websocket-v2/trade (subscribe request and
per-symbol ack, snapshot/update with `side` = the taker's side, `trade_id` a sequence number
per book), .../guides/websockets/introduction (endpoint, `heartbeat`, `ping`/`pong`) and
docs.kraken.com/api/docs/rest-api/get-recent-trades (`since` timestamp, `count` <= 1000,
rows [price, volume, time, "b"/"s", "m"/"l", misc, trade_id], cursor `last`).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from recorder.errors import ConfigError
from recorder.feeds.errors import FeedProtocolError, FeedRestError, FeedSubscribeError
from recorder.feeds.rest import get_json
from recorder.feeds.trades import Symbol, Trade, parse_rfc3339_ns, split_symbol

__all__ = ["Kraken"]

PAGE = 1000
MAX_PAGES = 100
REST_SIDES = {"b": "buy", "s": "sell"}


class Kraken:
    name = "kraken"
    default_ws = "wss://ws.kraken.com/v2"
    default_rest = "https://api.kraken.com"

    def __init__(self, symbols: list[str]) -> None:
        self.symbols: list[Symbol] = []
        for text in symbols:
            pair = split_symbol(text)
            if pair is None:
                raise ConfigError(f"kraken pair {text!r} must be BASE/QUOTE or BASE-QUOTE, "
                                  "e.g. BTC/USD")
            self.symbols.append(Symbol(f"{pair[0]}-{pair[1]}", f"{pair[0]}/{pair[1]}"))
        self._by_wire = {s.wire: s for s in self.symbols}
        self._acked: set[str] = set()
        self._req = 0

    def ws_url(self, base: str) -> str:
        return base

    async def prepare(self, http: aiohttp.ClientSession, rest: str) -> None:
        return None  # an unknown pair is refused by the subscription itself

    def start(self, *, reconnect: bool) -> list[dict[str, Any]]:
        self._acked = set()
        self._req += 1
        # After a reconnect the 50-trade snapshot may already cover a short gap.
        return [{"method": "subscribe", "params": {"channel": "trade",
                                                   "symbol": [s.wire for s in self.symbols],
                                                   "snapshot": reconnect},
                 "req_id": self._req}]

    @property
    def subscribed(self) -> bool:
        return len(self._acked) == len(self.symbols)

    def probe(self) -> dict[str, Any] | None:
        self._req += 1
        return {"method": "ping", "req_id": self._req}

    def handle(self, msg: Any, recv_ns: int) -> list[Trade]:
        if not isinstance(msg, dict):
            raise FeedProtocolError(f"kraken: unexpected message {msg!r:.200}")
        if msg.get("method") == "subscribe":
            if not msg.get("success"):
                raise FeedSubscribeError(f"kraken refused the subscription: {msg.get('error')}")
            result = msg.get("result")
            if isinstance(result, dict) and result.get("channel") == "trade":
                self._acked.add(str(result.get("symbol")))
            return []
        if msg.get("channel") == "trade" and msg.get("type") in ("snapshot", "update"):
            data = msg.get("data")
            if not isinstance(data, list):
                raise FeedProtocolError(f"kraken: trade message without data {msg!r:.200}")
            return [self._trade(t, recv_ns) for t in data]
        return []  # heartbeat, status, pong: liveness only

    def _trade(self, t: Any, recv_ns: int) -> Trade:
        try:
            symbol = self._by_wire[t["symbol"]]
            side = t["side"]
            if side not in ("buy", "sell"):
                raise ValueError(side)
            return Trade(symbol.name, int(t["trade_id"]), parse_rfc3339_ns(t["timestamp"], "kraken"),
                         float(t["price"]), float(t["qty"]), side, recv_ns)
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedProtocolError(f"kraken: malformed trade {t!r:.200}") from exc

    async def fetch_trades(self, http: aiohttp.ClientSession, rest: str, symbol: Symbol, *,
                           after_id: int, after_ts_ns: int, until_id: int | None) -> list[Trade]:
        # Trades is paged by time, not id: start at the last recorded trade's second (a few
        # trades too many, filtered by id) and follow the `last` cursor.
        url = rest.rstrip("/") + "/0/public/Trades"
        pair = symbol.wire.replace("/", "")
        since = str(after_ts_ns // 1_000_000_000)
        out: dict[int, Trade] = {}
        for _ in range(MAX_PAGES):
            _, body = await get_json(http, url, {"pair": pair, "since": since, "count": str(PAGE)})
            rows, last = _rows(body, url)
            recv_ns = time.time_ns()
            try:
                page = [Trade(symbol.name, int(r[6]), round(float(r[2]) * 1e6) * 1000,
                              float(r[0]), float(r[1]), REST_SIDES[r[3]], recv_ns) for r in rows]
            except (IndexError, KeyError, TypeError, ValueError) as exc:
                raise FeedRestError(f"GET {url}: malformed trade row: {exc}") from exc
            for t in page:
                if t.trade_id > after_id and (until_id is None or t.trade_id <= until_id):
                    out[t.trade_id] = t
            if len(page) < PAGE or last == since or (
                    until_id is not None and max(t.trade_id for t in page) >= until_id):
                break
            since = last
        return sorted(out.values(), key=lambda t: t.trade_id)


def _rows(body: Any, url: str) -> tuple[list[Any], str]:
    if not isinstance(body, dict):
        raise FeedRestError(f"GET {url}: expected an object")
    if body.get("error"):
        raise FeedRestError(f"GET {url}: {'; '.join(map(str, body['error']))}")
    result = body.get("result")
    if not isinstance(result, dict):
        raise FeedRestError(f"GET {url}: no result")
    # One pair per request: its key (Kraken's own pair name, e.g. XXBTZUSD) is the one that
    # is not "last".
    pairs = [v for k, v in result.items() if k != "last"]
    if len(pairs) != 1 or not isinstance(pairs[0], list):
        raise FeedRestError(f"GET {url}: expected one pair's trades")
    return pairs[0], str(result.get("last"))
