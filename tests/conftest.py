"""Shared fixtures: small recorded logs, a CLI runner in a subprocess, free ports."""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from recorder.config import SimConfig, parse_symbols
from recorder.record import RecordConfig, record

ROOT = Path(__file__).resolve().parent.parent
# Debian's chromium, headless; the background-networking flags keep it off the (closed) network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def collect_garbage_in_its_own_test() -> Iterator[None]:
    """Collect cycles as each test ends, so anything it left unclosed (a socket, an HTTP
    session) warns in that test, not at random in a later one."""
    yield
    gc.collect()


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `ticktape ARGS` as a user would, in its own process."""
    return subprocess.run([sys.executable, "-m", "ticktape", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_log(path: Path, *, ticks: int = 5_000, seed: int = 7, symbols: str = "BTC-USD",
             rate: float = 50.0, segment_rows: int = 1_000_000) -> Path:
    record(RecordConfig(path=path, sim=SimConfig(seed=seed, rate=rate,
                                                 symbols=parse_symbols(symbols)),
                        ticks=ticks, segment_rows=segment_rows))
    return path


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is required for the browser tests: run ./dev test")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright, one per test module."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    return make_log(tmp_path / "btc", ticks=5_000, segment_rows=2_000)


@pytest.fixture(scope="session")
def artifacts() -> Iterator[Path]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield ARTIFACTS
