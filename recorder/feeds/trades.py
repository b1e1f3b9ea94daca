"""What every venue module produces: a venue-neutral trade, symbols, and the Venue interface."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from recorder.errors import ConfigError
from recorder.feeds.errors import FeedProtocolError

__all__ = [
    "Symbol",
    "Trade",
    "Venue",
    "parse_rfc3339_ns",
    "split_symbol",
]

_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]00:00)$")
_PART = re.compile(r"^[A-Z0-9]{1,20}$")


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade, as the log stores it (symbol already BASE-QUOTE, side the taker's)."""

    symbol: str
    trade_id: int
    ts_ns: int  # the exchange's trade time
    price: float
    size: float
    side: str  # taker side: buy | sell
    recv_ns: int  # local wall clock when it arrived (WebSocket frame or REST response)


@dataclass(frozen=True, slots=True)
class Symbol:
    """An instrument as the log names it (BASE-QUOTE) and as the venue spells it on the wire."""

    name: str
    wire: str


def split_symbol(text: str) -> tuple[str, str] | None:
    """'BTC-USD', 'btc/usd' -> ('BTC', 'USD'); None when there is no separator."""
    for sep in ("-", "/"):
        if sep in text:
            base, _, quote = text.upper().partition(sep)
            if not (_PART.match(base) and _PART.match(quote)):
                raise ConfigError(f"symbol {text!r} is malformed: expected BASE-QUOTE, e.g. BTC-USD")
            return base, quote
    return None


def parse_rfc3339_ns(text: str, where: str) -> int:
    """'2023-09-25T07:48:36.925533Z' -> ns since the epoch, keeping every fractional digit."""
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if not match:
        raise FeedProtocolError(f"{where}: time {text!r} is not RFC 3339 UTC")
    seconds = int(datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
                  .replace(tzinfo=UTC).timestamp())
    frac = (match.group(2) or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(frac)


class Venue(Protocol):
    """One exchange's public trade feed: the WebSocket dialogue and the REST trade history.

    A venue object serves one connection at a time: `start()` resets its per-connection
    state and returns the messages to send; `handle()` turns one received JSON message into
    trades, raising FeedSubscribeError (a rejected subscription: fatal) or FeedReconnect (the
    server asked us to go)."""

    name: str
    symbols: list[Symbol]
    default_ws: str
    default_rest: str

    def ws_url(self, base: str) -> str: ...

    async def prepare(self, http: aiohttp.ClientSession, rest: str) -> None:
        """Check and resolve symbols before connecting (may call REST)."""

    def start(self, *, reconnect: bool) -> list[dict[str, Any]]: ...

    @property
    def subscribed(self) -> bool: ...

    def probe(self) -> dict[str, Any] | None:
        """A message that makes a healthy server answer (sent after half the silence timeout)."""

    def handle(self, msg: Any, recv_ns: int) -> list[Trade]: ...

    async def fetch_trades(self, http: aiohttp.ClientSession, rest: str, symbol: Symbol, *,
                           after_id: int, after_ts_ns: int, until_id: int | None) -> list[Trade]:
        """REST history: trades with after_id < id (<= until_id), ascending by id."""
