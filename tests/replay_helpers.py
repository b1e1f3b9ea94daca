"""Real servers and real clients for the replayer tests.

`Client` is a raw protocol probe (acks as dicts, batches as received, its `sio` open to extra
handlers) for testing the server's wire behaviour; `receive_all` is the project's own client
(ticktape.client: typed batches, resume, contiguity checked) for tests that need a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import socketio
from aiohttp import web

from replayer.app import STATE, ReplayServer, make_app
from replayer.config import ServerConfig
from ticktape.client import Batch, connect


@dataclass
class Served:
    url: str
    port: int
    data: Path
    app: web.Application

    @property
    def server(self) -> ReplayServer:
        return self.app[STATE]


@contextlib.asynccontextmanager
async def serve_in_process(config: ServerConfig) -> AsyncIterator[Served]:
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", config.port)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(f"http://127.0.0.1:{port}", port, config.path, app)
    finally:
        await runner.cleanup()


class ServerProcess:
    """`ticktape replay` as its own process; fails with the server's output if it dies."""

    def __init__(self, path: Path, *extra: str, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ticktape", "replay", str(path), "--port", str(port), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        assert self.proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if " at http://" in line or not line:
                break
        if " at http://" not in line:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line}{self.proc.stdout.read()}")
        self.url = line.split(" at ")[1].split("/ ")[0].rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """Die at once, as a crash would."""
        self.proc.kill()
        self.proc.communicate(timeout=20)

    def stop(self, sig: int = 15, timeout: float = 20) -> tuple[int, str]:
        if self.proc.poll() is not None:
            out, _ = self.proc.communicate()
            return self.proc.returncode, out
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out


@dataclass
class Client:
    """A python-socketio AsyncClient that keeps everything it receives."""

    sio: socketio.AsyncClient = field(init=False)
    batches: list[Any] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    ends: list[dict[str, Any]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Every HTTP session Engine.IO asked for, closed by close(). A disconnect() during a
    # reconnection leaves python-socketio's reconnect task running, and its next attempt
    # opens a session nobody closes; its garbage collection then warns in whichever later
    # test happens to be running (CI failed on that once).
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.1,
                                        reconnection_delay_max=0.5, http_session=self._session)
        self.sio.on("ticks", self._ticks)
        self.sio.on("status", self.statuses.append)
        self.sio.on("end", self._end)

    def _session(self) -> aiohttp.ClientSession:
        self.sessions.append(aiohttp.ClientSession())
        return self.sessions[-1]

    def _ticks(self, data: Any) -> None:
        self.batches.append(data)
        self.arrived.set()

    def _end(self, data: Any) -> None:
        self.ends.append(data)
        self.ended.set()

    async def connect(self, url: str, **kwargs: Any) -> None:
        kwargs.setdefault("transports", ["websocket"])
        await self.sio.connect(url, wait_timeout=10, **kwargs)

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data, timeout=20)

    def seqs(self) -> list[int]:
        return [s for b in self.batches for s in b["seq"]]

    def column(self, name: str) -> list[Any]:
        return [v for b in self.batches for v in b[name]]

    async def wait_end(self, timeout: float = 60) -> None:
        await asyncio.wait_for(self.ended.wait(), timeout)

    async def wait_ticks(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seqs()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.seqs())} of {count} ticks arrived")
            self.arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.2)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.shutdown()  # also stops a reconnection in progress
        for session in self.sessions:
            await session.close()


@dataclass
class Received:
    """Everything one ticktape.client subscription yielded, and what the client kept."""

    batches: list[Batch]
    info: dict[str, Any]
    statuses: list[dict[str, Any]]
    end: dict[str, Any] | None
    reconnects: int

    def seqs(self) -> list[int]:
        return [int(s) for b in self.batches for s in b.seq]

    def column(self, name: str) -> list[Any]:
        return [v for b in self.batches for v in getattr(b, name)]


async def receive_all(url: str, log: str, *, token: str | None = None,
                      reconnect_timeout: float = 30.0, timeout: float = 120,
                      **options: Any) -> Received:
    """Subscribe with ticktape.client and collect the stream until `end` (or its error)."""
    async with connect(url, token, reconnect_timeout=reconnect_timeout) as c:
        async def collect() -> list[Batch]:
            return [b async for b in c.subscribe(log, **options)]

        batches = await asyncio.wait_for(collect(), timeout)
        assert c.info is not None
        return Received(batches, c.info, c.statuses, c.end, c.reconnects)


class TcpProxy:
    """A real TCP hop between client and server whose connections can be cut mid-stream.
    With several target ports it is a load balancer in miniature: each connection goes to
    the first backend that accepts it."""

    def __init__(self, *target_ports: int) -> None:
        self.target_ports = target_ports
        self.port = 0
        self.connections = 0  # accepted so far: each (re)connect of a client is one
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        for port in self.target_ports:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        """Drop every open connection at once, as a network failure would."""
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def assert_exactly_once(seqs: list[int], start: int, stop: int) -> None:
    assert seqs == list(range(start, stop)), (
        f"{len(seqs)} seqs; first problems at "
        f"{[i for i, (a, b) in enumerate(zip(seqs, range(start, stop), strict=False)) if a != b][:5]}")


def sma_close(got: list[Any], want: np.ndarray) -> None:
    ours = np.array([np.nan if v is None else v for v in got], dtype=float)
    assert np.array_equal(np.isnan(ours), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.max(np.abs(ours[ok] - want[ok]) / want[ok], initial=0) <= 1e-9
