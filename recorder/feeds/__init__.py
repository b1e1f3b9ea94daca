"""Live public trade feeds recorded into logs: Binance, Coinbase Exchange and Kraken.

Modules: `trades` (the venue-neutral Trade and the Venue interface), one module per venue
(`binance`, `coinbase`, `kraken`: WebSocket messages and REST history, each citing the
exchange documentation it follows), `session` (connect, subscribe, silence, reconnect with
backoff), `gaps` (trade-id continuity), `recorder` (ordering, backfill, the log), `rest` and
`errors`. docs/feeds.md describes what is recorded and promised.
"""

from recorder.feeds.errors import FeedError, FeedSubscribeError
from recorder.feeds.recorder import VENUES, FeedConfig, FeedResult, record_feed

__all__ = ["VENUES", "FeedConfig", "FeedError", "FeedResult", "FeedSubscribeError", "record_feed"]
