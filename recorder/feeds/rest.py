"""One GET of JSON from an exchange's public REST API, every failure as FeedRestError."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from recorder.feeds.errors import FeedRestError

__all__ = ["REST_TIMEOUT", "get_json"]

REST_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def get_json(http: aiohttp.ClientSession, url: str, params: dict[str, str],
                   *, allow: tuple[int, ...] = ()) -> tuple[int, Any]:
    """(status, body) of GET url?params. Statuses other than 200 and `allow` raise."""
    try:
        async with http.get(url, params=params, timeout=REST_TIMEOUT) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise FeedRestError(f"GET {url}: {exc.__class__.__name__}: {exc}") from exc
    if status != 200 and status not in allow:
        raise FeedRestError(f"GET {url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FeedRestError(f"GET {url}: body is not JSON") from exc
