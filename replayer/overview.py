"""`GET /api/logs/{name}/overview?buckets=N`: the whole log's price per symbol, M4-downsampled.

The dashboard's overview strip draws it and seeks to where it is clicked. The answer is the
report's downsampling (analysis/downsample.py) over the log as it is now:

    {"log": "btc", "buckets": 1000, "events": 60000, "first_ts_ns": ..., "last_ts_ns": ...,
     "symbols": {"BTC-USD": {"ts": [ns, ...], "price": [...]}}}

`ts` are integer ns since the epoch, like `ticks`. Answers are cached per log, bucket count
and log length (a growing log is summarized again once it has grown); the pass over the log
runs in a worker thread, and concurrent requests for the same answer share one pass.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
import pyarrow as pa
from aiohttp import web

from analysis.downsample import M4Downsampler
from analysis.streaming import symbol_codes
from recorder.errors import TicktapeError
from recorder.log import Log
from replayer.catalog import Catalog
from replayer.errors import BadRequest, ReplayError, safe_message, shown

__all__ = ["DEFAULT_BUCKETS", "MAX_BUCKETS", "Overviews", "overview", "parse_buckets", "register"]

DEFAULT_BUCKETS = 1000
MAX_BUCKETS = 10_000
CACHED = 32  # answers kept (least recently used dropped first); each is ~4 points per bucket
_QUERY_KEYS = {"buckets", "token"}  # `token` is read by the /api/ guard
_Key = tuple[str, int, int, int | None]  # log name, buckets, events, last ts


def parse_buckets(query: Mapping[str, str]) -> int:
    """The `buckets` query parameter: an int in [1, MAX_BUCKETS]; unknown keys are errors."""
    extra = sorted(set(query) - _QUERY_KEYS)
    if extra:
        raise BadRequest(f"unknown query parameter {shown(extra[0])}; expected: buckets")
    raw = query.get("buckets")
    if raw is None:
        return DEFAULT_BUCKETS
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_BUCKETS:
        raise BadRequest(f"buckets: expected an integer in [1, {MAX_BUCKETS}], got {shown(raw)}")
    return int(raw)


def overview(log: Log, buckets: int) -> dict[str, Any]:
    """One pass over `log` (as last refreshed): per symbol, the M4 points of its price."""
    info = log.info()
    samplers: dict[str, M4Downsampler] = {}
    if info.first_ts is not None and info.last_ts is not None:
        t0, t1 = info.first_ts, info.last_ts
        for batch in log.iter_batches(columns=["ts", "symbol", "price"],
                                      dictionary_symbols=True):
            ts = batch.column("ts").cast(pa.int64()).to_numpy()
            price = batch.column("price").to_numpy()
            codes, names = symbol_codes(batch.column("symbol"))
            for code, name in enumerate(names):
                sampler = samplers.get(name)
                if sampler is None:
                    sampler = samplers[name] = M4Downsampler(t0, t1, buckets)
                idx = slice(None) if len(names) == 1 else np.flatnonzero(codes == code)
                sampler.update(ts[idx], price[idx])
    symbols = {}
    for name in sorted(samplers):
        ts, price = samplers[name].points()
        symbols[name] = {"ts": ts.tolist(), "price": price.tolist()}
    return {"log": log.name, "buckets": buckets, "events": info.events,
            "first_ts_ns": info.first_ts, "last_ts_ns": info.last_ts, "symbols": symbols}


def _refreshed(log: Log) -> tuple[int, int | None]:
    """Re-scan the log (file I/O: a worker thread); its length and last ts key the cache."""
    log.refresh()
    info = log.info()
    return info.events, info.last_ts


class Overviews:
    """The cache of overview answers, and the computations under way."""

    def __init__(self, catalog: Catalog, errors: MutableMapping[str, int]) -> None:
        self.catalog = catalog
        self.errors = errors  # the server's error counters (ticktape_errors_total)
        self._cache: OrderedDict[_Key, dict[str, Any]] = OrderedDict()
        # Held so a second request for the same answer awaits the first one's pass instead of
        # starting another; removed when it finishes, whatever the outcome.
        self._running: dict[_Key, asyncio.Task[dict[str, Any]]] = {}

    async def get(self, name: str, buckets: int) -> dict[str, Any]:
        log = self.catalog.get(name)
        events, last_ts = await asyncio.to_thread(_refreshed, log)
        key: _Key = (log.name, buckets, events, last_ts)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(overview, log, buckets))
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        # shield: one client hanging up must not cancel the pass other clients wait for.
        answer = await asyncio.shield(task)
        self._cache[key] = answer
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return answer

    async def handle(self, request: web.Request) -> web.Response:
        try:
            buckets = parse_buckets(request.query)
            answer = await self.get(request.match_info["name"], buckets)
        except BadRequest as exc:
            return self._error(400, exc.code, str(exc))
        except ReplayError as exc:
            return self._error(404, exc.code, str(exc))
        except TicktapeError as exc:  # damaged, or changed under the pass
            return self._error(409, "log_error", self.catalog.public(str(exc)))
        return web.json_response(answer)

    def _error(self, status: int, code: str, message: str) -> web.Response:
        self.errors[code] += 1
        return web.json_response({"error": {"code": code, "message": safe_message(message)}},
                                 status=status)


def register(app: web.Application, catalog: Catalog, errors: MutableMapping[str, int]) -> None:
    """Add the route (before any catch-all route); /api/ is token-guarded by the app."""
    app.router.add_get("/api/logs/{name}/overview", Overviews(catalog, errors).handle)
