"""Exchange symbols to ticktape's `BASE-QUOTE` form (BTCUSDT -> BTC-USDT), where the format allows."""

from __future__ import annotations

import re

from recorder.importers.errors import ImportInputError

__all__ = ["QUOTE_ASSETS", "check_symbol", "normalize_symbol"]

# Quote assets recognised at the end of a concatenated symbol. The longest match that leaves a
# base of 3+ characters wins (BTCFDUSD is BTC-FDUSD, BTCTUSD is BTC-TUSD, but XBTUSD is XBT-USD,
# not XB-TUSD), else the longest match (OPUSDT is OP-USDT).
QUOTE_ASSETS = (
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "USDE", "DAI", "PAX", "USD",
    "BTC", "ETH", "BNB", "XRP", "TRX", "DOGE", "SOL",
    "EUR", "EURI", "AEUR", "GBP", "TRY", "BRL", "AUD", "JPY", "RUB", "UAH", "ZAR", "NGN", "PLN",
    "RON", "ARS", "MXN", "COP", "CZK", "IDR", "IDRT", "BIDR", "BKRW", "KRW", "VAI",
)
_BY_LENGTH = sorted(QUOTE_ASSETS, key=len, reverse=True)
_VALID = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,63}$")


def normalize_symbol(native: str) -> str:
    """BTCUSDT -> BTC-USDT; BTCUSD_PERP -> BTC-USD-PERP; BTC/USD and btc-usd -> BTC-USD.
    A symbol that already has a separator keeps its parts; one with no known quote asset at
    its end is kept as the exchange spells it (capitalized)."""
    text = native.strip().upper().replace("/", "-")
    head, sep, suffix = text.partition("_")
    if "-" not in head:
        matches = [q for q in _BY_LENGTH if head.endswith(q) and len(head) > len(q)]
        quote = next((q for q in matches if len(head) - len(q) >= 3), matches[0] if matches else "")
        if quote:
            head = f"{head[: -len(quote)]}-{quote}"
    return f"{head}-{suffix}" if sep else head


def check_symbol(symbol: str, where: str) -> str:
    """A symbol as ticktape stores it (capitals, digits, `-`, `.`, `_`), or ImportInputError."""
    if not _VALID.match(symbol):
        raise ImportInputError(f"{where}: symbol {symbol!r} is malformed: expected capitals, "
                               "digits and '-', e.g. BTC-USDT")
    return symbol
