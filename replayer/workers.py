"""`ticktape replay --workers N`: N server processes on one port, kept running.

The supervisor (the command's own process) serves nothing itself. It reserves the port
(`SO_REUSEPORT`; with `--port 0` it picks one), starts N workers (`ticktape replay ...
--reuse-port`, each a full server of the fleet given by `--redis`) and waits until each has
printed its address. The kernel spreads new connections over the workers. A worker that dies
is started again (after `RESTART_DELAY`; a worker that keeps dying within `FLAP_WINDOW` of
its start `MAX_FLAPS` times in a row stops the supervisor: exit 1). SIGTERM or SIGINT is
passed on to every worker, which ends its streams cleanly; the supervisor exits 0 once all
have. Workers watch their supervisor and stop if it vanishes (no orphan keeps the port).

Metrics: the supervisor gives every worker one `PROMETHEUS_MULTIPROC_DIR` (a temporary
directory, removed at exit) and marks a dead worker's live gauges dead, so `/metrics` on any
worker covers every live worker (replayer/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass

from recorder.errors import ConfigError, TicktapeError
from replayer.metrics import MULTIPROC_ENV

__all__ = ["MAX_WORKERS", "SUPERVISOR_ENV", "WorkerCrashed", "run_workers"]

MAX_WORKERS = 64
SUPERVISOR_ENV = "TICKTAPE_SUPERVISOR_PID"  # a worker stops when this process is gone
RESTART_DELAY = 0.5
FLAP_WINDOW = 10.0  # s: a worker dying this soon after its start counts as flapping
MAX_FLAPS = 5
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class WorkerCrashed(TicktapeError):
    """A worker could not start, or kept dying."""

    exit_code = 1


@dataclass
class _Worker:
    index: int
    proc: asyncio.subprocess.Process
    started: float
    flaps: int = 0


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to the port with SO_REUSEPORT (not listening: it takes no connection),
    held while the workers run so the port stays ours (with port 0, the one picked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class Supervisor:
    def __init__(self, args: list[str], count: int, host: str, port: int) -> None:
        self.args, self.count, self.host, self.port = args, count, host, port
        self.workers: list[_Worker] = []
        self.stopping = False
        self.failure: str | None = None
        self.metrics_dir = tempfile.mkdtemp(prefix="ticktape-metrics-")
        self.env = {**os.environ, MULTIPROC_ENV: self.metrics_dir,
                    SUPERVISOR_ENV: str(os.getpid())}
        self._done = asyncio.Event()

    async def _spawn(self, index: int) -> tuple[_Worker, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ticktape", "replay", *self.args, "--port", str(self.port),
            "--reuse-port", stdout=asyncio.subprocess.PIPE, env=self.env,
            # Its own process group: a Ctrl-C reaches the supervisor, which passes it on once
            # (a worker stopping on its own would otherwise look like a crash to restart).
            process_group=0)
        assert proc.stdout is not None
        line = ""
        with contextlib.suppress(TimeoutError):
            line = (await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)).decode()
        if " at http://" not in line:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise WorkerCrashed(f"worker {index} did not start (exit code {proc.returncode})"
                                f"{': ' + line.strip() if line.strip() else ''}")
        return _Worker(index, proc, time.monotonic()), line

    async def _drain(self, worker: _Worker) -> None:
        """Keep reading a worker's stdout (a full pipe would block it)."""
        assert worker.proc.stdout is not None
        while await worker.proc.stdout.readline():
            pass

    async def _watch(self, worker: _Worker) -> None:
        while True:
            drain = asyncio.create_task(self._drain(worker))
            code = await worker.proc.wait()
            await drain
            _mark_dead(worker.proc.pid, self.metrics_dir)
            if self.stopping:
                return
            lived = time.monotonic() - worker.started
            worker.flaps = worker.flaps + 1 if lived < FLAP_WINDOW else 0
            print(f"worker {worker.index} (pid {worker.proc.pid}) exited with code {code} "
                  f"after {lived:.1f} s; restarting", file=sys.stderr, flush=True)
            if worker.flaps >= MAX_FLAPS:
                self.failure = (f"worker {worker.index} died {worker.flaps} times within "
                                f"{FLAP_WINDOW:g} s of starting; stopping")
                self._done.set()
                return
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            try:
                fresh, _ = await self._spawn(worker.index)
            except WorkerCrashed as exc:
                print(f"{exc}; trying again", file=sys.stderr, flush=True)
                worker.flaps += 1
                worker.started = time.monotonic()
                continue
            fresh.flaps = worker.flaps
            self.workers[worker.index] = worker = fresh

    async def run(self, banner: str) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._done.set)
        watchers: list[asyncio.Task[None]] = []
        try:
            first = ""
            for index in range(self.count):
                worker, line = await self._spawn(index)
                self.workers.append(worker)
                first = first or line
            address = first.split(" at ", 1)[1].split("/ ", 1)[0]
            pids = ", ".join(str(w.proc.pid) for w in self.workers)
            print(f"{banner} at {address}/  ({self.count} workers, pids {pids}; "
                  "Ctrl-C to stop)", flush=True)
            watchers += [asyncio.create_task(self._watch(w)) for w in self.workers]
            await self._done.wait()
        finally:
            self.stopping = True
            await self._stop_all()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        for task in watchers:
            task.cancel()
        if self.failure:
            raise WorkerCrashed(self.failure)
        unclean = [f"worker {w.index}: {w.proc.returncode}" for w in self.workers
                   if w.proc.returncode != 0]
        if unclean:
            raise WorkerCrashed(f"workers did not stop cleanly ({', '.join(unclean)})")
        print("stopped", file=sys.stderr, flush=True)
        return 0

    async def _stop_all(self) -> None:
        """SIGTERM to every worker (each ends its streams and exits 0); SIGKILL after
        STOP_TIMEOUT."""
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()


def _mark_dead(pid: int, path: str) -> None:
    """A dead worker's live gauges leave the sums (its counters stay: totals keep counting)."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, path)


async def _run(args: list[str], count: int, host: str, port: int, banner: str) -> int:
    held = reserve_port(host, port)
    try:
        supervisor = Supervisor(args, count, host, held.getsockname()[1])
        return await supervisor.run(banner)
    finally:
        held.close()


def run_workers(args: list[str], *, count: int, host: str, port: int, banner: str) -> int:
    """Run `count` workers of `ticktape replay ARGS` on host:port until SIGTERM/SIGINT."""
    if not 2 <= count <= MAX_WORKERS:
        raise ConfigError(f"--workers must be within [1, {MAX_WORKERS}], got {count}")
    return asyncio.run(_run(args, count, host, port, banner))


async def watch_supervisor(stop: asyncio.Event) -> None:
    """In a worker: set `stop` once the supervisor that started it is gone."""
    expected = os.environ.get(SUPERVISOR_ENV)
    if not expected:
        return
    while not stop.is_set():
        if os.getppid() != int(expected):
            stop.set()
            return
        await asyncio.sleep(1.0)
