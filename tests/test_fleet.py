"""A fleet (`replay --redis`, `--workers`): real redis-server, real server processes.

One broadcast heard on two processes; its leader SIGKILLed mid-broadcast; Redis restarted
mid-broadcast; `--workers 2` with its supervisor. Every test waits with deadlines and
asserts what clients received (every seq exactly once), never how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
import redis

from replayer.config import ServerConfig
from tests.conftest import free_port, make_log
from tests.replay_helpers import (
    Client,
    ServerProcess,
    TcpProxy,
    assert_exactly_once,
    serve_in_process,
)
from ticktape.client import Batch, connect

TICKS = 12_000  # at 1,000 ticks/s and speed 1.5: an 8 s broadcast


class RedisServer:
    """redis-server on a free port, no persistence, in its own tmp dir; restartable."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (./dev test installs it with apt-get)"
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, decode_responses=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fleet")
    make_log(data / "bc", ticks=TICKS, rate=1_000, segment_rows=5_000)
    return data


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def two(data_dir: Path, redis_server: RedisServer) -> Iterator[tuple[ServerProcess, ...]]:
    """Two processes of one fleet, on two ports."""
    servers: list[ServerProcess] = []
    try:
        for _ in range(2):
            servers.append(ServerProcess(data_dir, "--redis", redis_server.url))
        yield tuple(servers)
    finally:
        for s in servers:
            s.stop(signal.SIGKILL)


async def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _leader_pid(r: RedisServer) -> int | None:
    with contextlib.closing(r.client()) as c:
        leases = [c.get(k) for k in c.scan_iter("ticktape:*:lease")]
    return int(leases[0].split(":")[1]) if leases and leases[0] else None


BROADCAST = {"log": "bc", "speed": 1.5, "mode": "broadcast"}


async def test_one_broadcast_heard_on_two_processes(two: tuple[ServerProcess, ...],
                                                    redis_server: RedisServer) -> None:
    a, b = Client(), Client()
    try:
        await a.connect(two[0].url)
        await b.connect(two[1].url)
        assert (await a.call("subscribe", BROADCAST))["ok"]
        assert _leader_pid(redis_server) == two[0].proc.pid  # the first joiner's process
        assert (await b.call("subscribe", BROADCAST))["ok"]
        await asyncio.gather(a.wait_end(60), b.wait_end(60))
        # b joined within the recent window of seq 0: both heard the whole log, identically.
        assert_exactly_once(a.seqs(), 0, TICKS)
        assert b.seqs() == a.seqs() and b.column("sma") == a.column("sma")
        assert b.ends == a.ends == [{"log": "bc", "last_seq": TICKS - 1}]
        # The broadcast is over: marked ended, no leader left.
        await _until(lambda: _leader_pid(redis_server) is None, "the lease to go")
        with contextlib.closing(redis_server.client()) as c:
            assert [c.hget(k, "ended") for k in c.scan_iter("ticktape:*:state")] == ["1"]
        # A client's own stream in fleet mode plays on its process as before.
        ack = await a.call("subscribe", {"log": "bc", "speed": "max", "from_seq": TICKS - 10})
        assert ack["ok"]
        await _until(lambda: len(a.ends) == 2, "the stream's end")
    finally:
        await a.close()
        await b.close()


async def _collect(url: str, out: list[Batch], reconnects: list[int]) -> None:
    async with connect(url, reconnect_timeout=30) as c:
        async for batch in c.subscribe("bc", speed=1.5, mode="broadcast"):
            out.append(batch)
        reconnects.append(c.reconnects)


async def test_the_leader_dies_and_another_process_plays_on(
        two: tuple[ServerProcess, ...], redis_server: RedisServer) -> None:
    leader, survivor = two
    proxy = TcpProxy(leader.port, survivor.port)
    await proxy.start()
    first, stay1, stay2 = Client(), Client(), Client()
    moved: list[Batch] = []
    reconnects: list[int] = []
    try:
        await first.connect(leader.url)
        assert (await first.call("subscribe", BROADCAST))["ok"]
        assert _leader_pid(redis_server) == leader.proc.pid
        for c in (stay1, stay2):
            await c.connect(survivor.url)
            assert (await c.call("subscribe", BROADCAST))["ok"]
        # ticktape.client on the leader (through the proxy): it resumes with from_seq.
        mover = asyncio.create_task(_collect(f"http://127.0.0.1:{proxy.port}", moved,
                                             reconnects))
        await stay1.wait_ticks(3_000, 30)
        await _until(lambda: len(moved) > 5, "ticks through the proxy")
        leader.kill()  # SIGKILL mid-broadcast
        await _until(lambda: _leader_pid(redis_server) == survivor.proc.pid, "the takeover")
        await asyncio.gather(stay1.wait_end(60), stay2.wait_end(60))
        await asyncio.wait_for(mover, 60)
        # The survivor's clients heard every seq exactly once, across the handover.
        for c in (stay1, stay2):
            assert_exactly_once(c.seqs(), 0, TICKS)
            assert c.ends == [{"log": "bc", "last_seq": TICKS - 1}]
        # The moved client reconnected to the survivor and resumed: exactly once overall.
        seqs = [int(s) for b in moved for s in b.seq]
        assert reconnects == [1]
        assert_exactly_once(seqs, seqs[0], TICKS)
    finally:
        for c in (first, stay1, stay2):
            await c.close()
        await proxy.close()


async def test_redis_restarted_mid_broadcast(two: tuple[ServerProcess, ...],
                                             redis_server: RedisServer) -> None:
    clients = [Client() for _ in range(4)]
    try:
        for i, c in enumerate(clients):
            await c.connect(two[i % 2].url)
            assert (await c.call("subscribe", BROADCAST))["ok"]
        await clients[1].wait_ticks(2_000, 30)
        redis_server.stop()  # gone: keys, subscriptions, connections
        await asyncio.sleep(1.0)
        redis_server.start()  # empty
        await asyncio.gather(*(c.wait_end(60) for c in clients))
        for c in clients:
            assert_exactly_once(c.seqs(), 0, TICKS)
            assert c.ends == [{"log": "bc", "last_seq": TICKS - 1}]
            assert not any(s.get("reason") for s in c.statuses)
        async with aiohttp.ClientSession() as http:  # the outage did happen to the fleet
            errors = [(await _metrics(http, s.url))["ticktape_fleet_redis_errors_total"]
                      for s in two]
        assert sum(errors) >= 1, errors
        # And the fleet still works afterwards: a new broadcast reaches both processes.
        assert (await clients[0].call("subscribe", {**BROADCAST, "speed": "max"}))["ok"]
        assert (await clients[1].call("subscribe", {**BROADCAST, "speed": "max"}))["ok"]
        await _until(lambda: all(len(c.ends) == 2 for c in clients[:2]), "the second end")
    finally:
        for c in clients:
            await c.close()


async def _metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line}


@pytest.fixture
async def workers(data_dir: Path, redis_server: RedisServer) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(data_dir, "--workers", "2", "--redis", redis_server.url)
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)
        for child in psutil.Process().children(recursive=True):
            if child.pid != server.proc.pid and child.cmdline()[-1:] == ["--reuse-port"]:
                child.kill()


async def test_workers_share_a_port_restart_and_stop_cleanly(workers: ServerProcess) -> None:
    supervisor = psutil.Process(workers.proc.pid)
    pids = {p.pid for p in supervisor.children()}
    assert len(pids) == 2
    clients = [Client() for _ in range(12)]
    try:
        for c in clients:
            await c.connect(workers.url)
        async with aiohttp.ClientSession() as http:
            # Any worker answers /metrics for both: clients and processes summed.
            async def whole() -> bool:
                values = await _metrics(http, workers.url)
                return values["ticktape_clients"] == 12 and values["ticktape_processes"] == 2

            deadline = time.monotonic() + 20
            while not await whole():
                assert time.monotonic() < deadline, await _metrics(http, workers.url)
                await asyncio.sleep(0.2)
            # Both workers hold some of the connections (the kernel spread them).
            per_worker = [len([c for c in psutil.Process(pid).net_connections()
                               if c.status == "ESTABLISHED"]) for pid in pids]
            assert all(n > 0 for n in per_worker), per_worker
            # A worker that dies is started again; the port keeps answering meanwhile.
            victim = next(iter(pids))
            psutil.Process(victim).kill()
            await _until(lambda: len({p.pid for p in supervisor.children()} - pids) == 1,
                         "the restart")
            async with http.get(f"{workers.url}/healthz") as resp:
                assert resp.status == 200
            deadline = time.monotonic() + 20
            while (await _metrics(http, workers.url))["ticktape_processes"] != 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        children = supervisor.children()
        # SIGTERM: the supervisor stops both workers (it exits 0 only if each exited 0).
        code, out = await asyncio.to_thread(workers.stop, signal.SIGTERM)
        assert code == 0, out
        assert out.strip().endswith("stopped"), out
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        for c in clients:
            await c.close()


async def test_without_redis_own_streams_play_and_broadcasts_say_unavailable(
        data_dir: Path) -> None:
    config = ServerConfig(path=data_dir, port=0, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with serve_in_process(config) as served:
        c = Client()
        try:
            await c.connect(served.url)
            ack = await c.call("subscribe", BROADCAST)
            assert ack["ok"] is False and ack["error"]["code"] == "unavailable", ack
            assert (await c.call("subscribe", {"log": "bc", "speed": "max"}))["ok"]
            await c.wait_end(60)
            assert_exactly_once(c.seqs(), 0, TICKS)
            # Polling is refused in a fleet: without sticky sessions it cannot work.
            async with aiohttp.ClientSession() as http, http.get(
                    f"{served.url}/socket.io/?EIO=4&transport=polling") as resp:
                assert resp.status == 400
        finally:
            await c.close()
