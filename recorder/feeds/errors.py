"""Errors of the live feeds; the CLI prints them as one line (exit 2 for a rejected symbol)."""

from __future__ import annotations

from recorder.errors import TicktapeError

__all__ = [
    "FeedError",
    "FeedProtocolError",
    "FeedReconnect",
    "FeedRestError",
    "FeedSubscribeError",
]


class FeedError(TicktapeError):
    """A live feed failed in a way reconnecting cannot fix."""

    exit_code = 1


class FeedSubscribeError(FeedError):
    """The exchange rejected the subscription (an unknown symbol, a malformed request)."""

    exit_code = 2


class FeedProtocolError(Exception):
    """A message that does not have the documented shape: the connection is dropped and redone."""


class FeedReconnect(Exception):
    """The server announced it is going away (e.g. Binance `serverShutdown`)."""


class FeedRestError(Exception):
    """A REST history request failed (network, HTTP status, or a body of the wrong shape)."""
