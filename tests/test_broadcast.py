"""Broadcasts (`"mode": "broadcast"`): one shared clock, late joiners, slow consumers, failures."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from replayer.config import ServerConfig
from tests.conftest import make_log
from tests.log_damage import rot_column
from tests.replay_helpers import Client, Served, assert_exactly_once, serve_in_process

LONG = 400_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("broadcast")
    make_log(data / "fast", ticks=4_000, rate=1_000)
    make_log(data / "long", ticks=LONG, rate=1_000)  # 400 s of events
    make_log(data / "rotten", ticks=3_000, segment_rows=1_000)
    rot_column(data / "rotten" / "seg-000000000000.parquet")  # unreadable from its first seq
    return data


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[Served]:
    async with serve_in_process(ServerConfig(path=data_dir, port=0)) as s:
        yield s


async def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


async def test_broadcast_shares_one_clock_and_late_joiners_get_recent(served: Served) -> None:
    first, late = Client(), Client()
    try:
        await first.connect(served.url)
        await late.connect(served.url)
        ack = await first.call("subscribe", {"log": "fast", "speed": 2, "mode": "broadcast"})
        assert ack["ok"] and ack["mode"] == "broadcast"
        await first.wait_ticks(1_500)  # more than the 1,000-tick recent window
        assert (await late.call("subscribe", {"log": "fast", "speed": 2, "mode": "broadcast"})
                )["ok"]
        await asyncio.gather(first.wait_end(30), late.wait_end(30))
        assert_exactly_once(first.seqs(), 0, 4_000)
        late_seqs = late.seqs()
        # The late joiner's first batch is the recent window, then it continues exactly.
        assert late_seqs[0] > 0 and len(late.batches[0]["seq"]) > 50
        assert_exactly_once(late_seqs, late_seqs[0], 4_000)
        assert (await first.call("subscribe", {"log": "fast", "mode": "broadcast"}))["ok"]
        assert (await first.call("control", {"action": "pause"}))["error"]["code"] == \
            "not_allowed"
    finally:
        await first.close()
        await late.close()


async def test_a_broadcast_that_cannot_start_refuses_every_joiner(served: Served) -> None:
    clients = [Client() for _ in range(3)]
    try:
        for c in clients:
            await c.connect(served.url)
        request = {"log": "rotten", "speed": 1, "mode": "broadcast"}
        # Two at once (the second may find the first one's channel starting), then a later one.
        acks = await asyncio.gather(*(c.call("subscribe", request) for c in clients[:2]))
        acks.append(await clients[2].call("subscribe", request))
        for ack in acks:
            assert ack["ok"] is False and ack["error"]["code"] == "log_error", ack
            assert ack["error"]["message"].startswith("rotten: ")
        assert served.server.channels == {}
        for c in clients:  # none of them holds a stream
            assert (await c.call("unsubscribe", {})) == {"ok": True, "unsubscribed": False}
        assert (await _metrics(served.url))["ticktape_streams"] == 0
        # A readable log's broadcast starts as usual afterwards.
        assert (await clients[0].call("subscribe", {"log": "fast", "speed": "max",
                                                    "mode": "broadcast"}))["ok"]
        await clients[0].wait_end(30)
        assert_exactly_once(clients[0].seqs(), 0, 4_000)
    finally:
        for c in clients:
            await c.close()


class StallingProxy:
    """A TCP hop whose server-to-client direction can stop reading, as a stuck client would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A small receive buffer towards the server, so a stall reaches it soon.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
        up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=16_384)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       gated: bool) -> None:
            with contextlib.suppress(Exception):
                while True:
                    if gated:
                        await self.flowing.wait()
                    data = await src.read(16_384)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    async def close(self) -> None:
        self.flowing.set()
        for writer in self._writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_slow_consumer_is_detached_from_the_broadcast(served: Served) -> None:
    proxy = StallingProxy(served.port)
    await proxy.start()
    slow = Client()
    try:
        await slow.connect(f"http://127.0.0.1:{proxy.port}")
        ack = await slow.call("subscribe", {"log": "long", "speed": 50, "mode": "broadcast"})
        assert ack["ok"]
        await slow.wait_ticks(100)
        proxy.flowing.clear()  # the client stops reading; the server's queue for it grows
        await _until(lambda: served.server.metrics.slow_consumers_dropped >= 1, "the drop")
        proxy.flowing.set()
        await _until(lambda: any(s.get("reason") == "slow_consumer" for s in slow.statuses),
                     "the slow_consumer status")
        # Dropped means detached: no stream left for this client ...
        ack = await slow.call("control", {"action": "pause"})
        assert ack["error"] == {"code": "not_allowed", "message": "no stream: subscribe first"}
        assert (await slow.call("unsubscribe", {})) == {"ok": True, "unsubscribed": False}
        # ... and the broadcast, left without members, stopped.
        assert served.server.channels == {}
        await _until(lambda: served.server.metrics.streams == 0, "the channel to stop")
        metrics = await _metrics(served.url)
        assert metrics["ticktape_streams"] == 0 and metrics["ticktape_queue_depth"] == 0
        # It can subscribe again, on its own clock.
        ack = await slow.call("subscribe", {"log": "fast", "speed": "max"})
        assert ack["ok"]
        await slow.wait_end(30)
    finally:
        await slow.close()
        await proxy.close()
