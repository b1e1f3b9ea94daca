"""The replay server's HTTP side: the dashboard and its assets, /api/logs, /healthz, /metrics,
and the token and CORS guard in front of them (docs/protocol.md, "HTTP")."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from recorder.errors import TicktapeError
from replayer.catalog import Catalog
from replayer.errors import ReplayError, safe_message
from replayer.overview import register as register_overview

if TYPE_CHECKING:
    from replayer.app import ReplayServer

__all__ = ["STATE", "STATIC", "add_routes", "guard", "token_matches"]

STATIC = Path(__file__).parent / "static"
STATE: web.AppKey[ReplayServer] = web.AppKey("ticktape", object)  # type: ignore[arg-type]


def token_matches(offered: object, token: str) -> bool:
    """Constant-time comparison of bytes: compare_digest refuses non-ASCII str (a TypeError,
    which was a 500 or a dropped connection instead of `unauthorized`)."""
    if not isinstance(offered, str):
        return False
    # surrogatepass: a lone surrogate (JSON "\ud800") encodes too, and never matches.
    return hmac.compare_digest(offered.encode("utf-8", "surrogatepass"),
                               token.encode("utf-8", "surrogatepass"))


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    server = request.app[STATE]
    token = server.config.token
    if token and request.path.startswith("/api/"):
        offered = request.query.get("token") or request.headers.get(
            "Authorization", "").removeprefix("Bearer ").strip()
        if not token_matches(offered or "", token):
            server.metrics.errors["unauthorized"] += 1
            return _error(401, "unauthorized", "a valid token is required")
    response = await handler(request)
    origin = request.headers.get("Origin")
    allowed = server.config.cors_origins
    if origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def _socketio_js(request: web.Request) -> web.StreamResponse:
    """The pinned socket.io-client bundle, shipped in the package (static/vendor/MANIFEST.json
    names its version and hash). Never fetched from a CDN or a checkout's node_modules."""
    return web.FileResponse(STATIC / "vendor" / "socket.io.min.js",
                            headers={"Cache-Control": "max-age=86400"})


async def _plotly_js(request: web.Request) -> web.StreamResponse:
    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return web.FileResponse(bundle, headers={"Cache-Control": "max-age=86400"})


async def _logs(request: web.Request) -> web.Response:
    server = request.app[STATE]
    return web.json_response(await asyncio.to_thread(server.catalog.infos))


async def _log(request: web.Request) -> web.Response:
    server = request.app[STATE]
    try:
        info = await asyncio.to_thread(server.catalog.info, request.match_info["name"])
    except ReplayError as exc:
        server.metrics.errors[exc.code] += 1
        return _error(404, exc.code, safe_message(str(exc)))
    except TicktapeError as exc:
        server.metrics.errors["log_error"] += 1
        return _error(409, "log_error", safe_message(server.catalog.public(str(exc))))
    return web.json_response(info)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _log_gaps(catalog: Catalog) -> dict[str, tuple[int, int]]:
    """Per served log with any: (trade-id gaps noted, trades still missing), from its
    segments' metadata (already read: no file is opened)."""
    out: dict[str, tuple[int, int]] = {}
    for name in catalog.names:
        with contextlib.suppress(TicktapeError):
            noted = [g for seg in catalog.get(name).segments
                     for g in seg.metadata.get("segment", {}).get("gaps", [])]
            if noted:
                # "missing": the id ranges [first, last] still missing (docs/feeds.md).
                lost = sum(last - first + 1 for g in noted for first, last in g.get("missing", []))
                out[name] = (len(noted), lost)
    return out


async def _metrics(request: web.Request) -> web.Response:
    server = request.app[STATE]
    text = server.metrics.render(_log_gaps(server.catalog))
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _not_found(request: web.Request) -> web.Response:
    return _error(404, "not_found", f"no route {request.path}")


def add_routes(app: web.Application, catalog: Catalog,
               errors: MutableMapping[str, int]) -> None:
    """Every HTTP route, the catch-all 404 last (Socket.IO's route must be attached before)."""
    app.router.add_get("/", _index)
    app.router.add_get("/static/vendor/plotly.min.js", _plotly_js)
    app.router.add_get("/static/vendor/socket.io.min.js", _socketio_js)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_get("/api/logs", _logs)
    app.router.add_get("/api/logs/{name}", _log)
    register_overview(app, catalog, errors)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/{tail:.*}", _not_found)
