"""`ticktape record --feed`: the real CLI against local exchanges that speak the documented
formats (tests/feed_servers.py): exact rows, reconnects, gaps backfilled or reported, silence,
refused symbols, signals and SIGKILL + recover."""

from __future__ import annotations

import functools
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from recorder.errors import TicktapeError
from recorder.feeds.gaps import GapTracker, ranges
from recorder.feeds.session import Backoff
from recorder.feeds.trades import parse_rfc3339_ns
from recorder.log import Log
from tests.conftest import run_cli
from tests.feed_servers import VENUE_SYMBOLS, Exchange, Tape, TapeTrade, start_exchange

VENUES = ["binance", "coinbase", "kraken"]


@pytest.fixture(params=VENUES)
def exchange(request: pytest.FixtureRequest) -> Iterator[Exchange]:
    ex, stop = start_exchange(request.param)
    try:
        yield ex
    finally:
        stop()


def _symbols(venue: str) -> str:
    return ",".join(given for given, _, _ in VENUE_SYMBOLS[venue])


def _start(path: Path, ex: Exchange, *extra: str, symbols: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ticktape", "record", str(path), "--feed", ex.venue,
         "--symbols", symbols or _symbols(ex.venue), "--feed-url", ex.ws_url,
         "--rest-url", ex.rest_url, "--flush-interval", "0.1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _events(path: Path) -> int:
    """Events a reader sees in a log being recorded (0 before the recorder opened it)."""
    try:
        return Log(path).events
    except TicktapeError:
        return 0


def _reached(path: Path, events: int) -> bool:
    return _events(path) >= events


def _wait(predicate: Callable[[], bool], proc: subprocess.Popen[str], what: str,
          timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"recorder exited {proc.returncode} while waiting for {what}:\n"
                                 f"{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def _rows(path: Path) -> list[tuple[Any, ...]]:
    log = Log(path)
    table = pa.Table.from_batches(list(log.iter_batches(columns=log.columns)))
    assert table.column("seq").to_pylist() == list(range(table.num_rows))
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    return list(zip(table.column("symbol").to_pylist(), table.column("trade_id").to_pylist(), ts,
                    table.column("price").to_pylist(), table.column("size").to_pylist(),
                    table.column("side").to_pylist(), strict=True))


def _expected(trades: list[TapeTrade]) -> list[tuple[Any, ...]]:
    return [t.row() for t in sorted(trades, key=lambda t: t.ts_ns)]


def _info(path: Path) -> dict[str, Any]:
    result = run_cli("info", str(path), "--json")
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    return info


# -- recording ---------------------------------------------------------------------------------
def test_records_every_trade_the_exchange_sent(tmp_path: Path, exchange: Exchange) -> None:
    path = tmp_path / "live"
    tape = Tape(exchange.venue)
    began = time.time_ns()
    proc = _start(path, exchange)
    exchange.wait(lambda e: e.subscriptions >= 1)
    sent = tape.take(60)
    exchange.publish(sent)
    _wait(lambda: _events(path) >= len(sent), proc, "the trades in the log")
    code, out, err = _stop(proc)
    assert code == 0, err
    assert "recorded 60 trades" in out and "0 gap(s)" in out

    assert _rows(path) == _expected(sent)  # side is the taker's: Coinbase's maker side inverted
    table = pa.Table.from_batches(list(Log(path).iter_batches(columns=Log(path).columns)))
    assert table.column("venue").to_pylist() == [exchange.venue] * len(sent)
    recv = table.column("recv_ts").cast(pa.int64()).to_pylist()
    assert all(began <= r <= time.time_ns() for r in recv)
    if exchange.venue == "coinbase":  # the wire carried the maker's side
        assert all(t.side != exchange._wire(t)["side"] for t in sent)
    meta = Log(path).metadata
    assert meta["source"] == f"live:{exchange.venue}"
    assert meta["feed"]["symbols"] == [name for _, _, name in VENUE_SYMBOLS[exchange.venue]]
    assert not (path / "_journal.arrows").exists()
    verify = run_cli("verify", str(path))
    assert verify.returncode == 0, verify.stdout


def test_reconnect_and_skipped_ids_are_backfilled_in_time_order(tmp_path: Path,
                                                                exchange: Exchange) -> None:
    path = tmp_path / "gappy"
    tape = Tape(exchange.venue, seed=2)
    proc = _start(path, exchange)
    exchange.wait(lambda e: e.subscriptions >= 1)
    before = tape.take(30)
    exchange.publish(before)
    _wait(lambda: _events(path) >= len(before), proc, "the first trades")

    exchange.refuse()  # the connection goes down and stays down while trades happen
    if exchange.venue == "binance":
        exchange.shutdown_notice()  # documented: the client reconnects by itself
    else:
        exchange.drop()
    exchange.wait(lambda e: not e.clients)
    missed = tape.take(12, only=0) + tape.take(12, only=1)
    exchange.publish(missed)  # nobody subscribed: REST history only
    exchange.refuse(False)
    exchange.wait(lambda e: e.subscriptions >= 2)
    # Only the second symbol trades now: the first one's missed trades must be fetched and
    # written before these (they are older), although no live trade of it revealed a gap.
    after = tape.take(20, only=1)
    exchange.publish(after)
    _wait(lambda: _events(path) >= len(before) + len(missed) + len(after), proc,
          "the missed trades, fetched after reconnecting")
    dropped = tape.take(3, only=0)
    exchange.skip(dropped)  # the stream skips ids mid-connection
    tail = tape.take(2, only=0) + tape.take(10)
    exchange.publish(tail)

    sent = before + missed + after + dropped + tail
    _wait(lambda: _events(path) >= len(sent), proc, "every trade, backfilled ones included")
    code, _, err = _stop(proc)
    assert code == 0, err
    assert _rows(path) == _expected(sent)  # each exactly once, in exchange-time order
    assert exchange.rest_requests, "nothing was fetched from REST"

    gaps = _info(path)["gaps"]
    assert gaps and all(g["missing"] == [] and g["backfilled"] == g["count"] for g in gaps)
    skipped = [g for g in gaps if g["cause"] == "skipped"]
    assert [(g["symbol"], g["first_id"], g["last_id"]) for g in skipped] == [
        (dropped[0].name, dropped[0].trade_id, dropped[-1].trade_id)]
    reconnect = {g["symbol"] for g in gaps if g["cause"] == "reconnect"}
    if exchange.venue != "kraken":  # Kraken's reconnect snapshot already holds the missed trades
        assert reconnect == {t.name for t in missed}
    verify = run_cli("verify", str(path), "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["gaps"] == []


@pytest.mark.parametrize("venue", ["binance", "kraken"])
def test_a_gap_rest_cannot_fill_is_reported(tmp_path: Path, venue: str) -> None:
    ex, stop = start_exchange(venue)
    try:
        path = tmp_path / "holed"
        tape = Tape(venue, seed=3)
        proc = _start(path, ex, "--seal-interval", "0.1")
        ex.wait(lambda e: e.subscriptions >= 1)
        first = tape.take(10, only=0)
        ex.publish(first)
        _wait(lambda: _events(path) >= len(first), proc, "the first trades")
        ex.rest_fails = True
        lost = tape.take(2, only=0)
        ex.skip(lost)
        later = tape.take(5, only=0)
        ex.publish(later)
        _wait(lambda: _events(path) >= len(first) + len(later), proc, "the trades after the gap")
        ex.wait(lambda e: bool(e.rest_requests))
        code, out, err = _stop(proc)
    finally:
        stop()
    assert code == 0, err
    assert _rows(path) == _expected(first + later)
    assert f"gap of 2 trade(s), ids {lost[0].trade_id}..{lost[1].trade_id}" in err
    (gap,) = _info(path)["gaps"]
    assert gap["missing"] == [[lost[0].trade_id, lost[1].trade_id]] and gap["backfilled"] == 0
    assert "HTTP 500" in gap["error"]
    verify = run_cli("verify", str(path))
    assert verify.returncode == 0  # a gap in the source is not damage in the log
    assert f"trade ids {lost[0].trade_id}..{lost[1].trade_id} missing" in verify.stdout
    assert "1 gap(s): 2 trade(s) skipped, 0 backfilled, 2 missing" in out
    assert run_cli("compact", str(path), "--segment-rows", "1000").returncode == 0
    assert _info(path)["gaps"] == [gap]  # carried into the new segments, once


def test_silence_reconnects(tmp_path: Path) -> None:
    ex, stop = start_exchange("kraken")
    try:
        path = tmp_path / "quiet"
        tape = Tape("kraken", seed=4)
        proc = _start(path, ex, "--silence-timeout", "1")
        ex.wait(lambda e: e.subscriptions >= 1)
        first = tape.take(5)
        ex.publish(first)
        _wait(lambda: _events(path) >= len(first), proc, "the first trades")
        ex.mute()  # open, but not a byte more: no heartbeat, no pong
        ex.wait(lambda e: e.subscriptions >= 2)
        second = tape.take(5)
        ex.publish(second)
        _wait(lambda: _events(path) >= len(first) + len(second), proc, "trades after reconnecting")
        code, _, err = _stop(proc)
    finally:
        stop()
    assert code == 0, err
    assert "no message for 1 s" in err
    assert _rows(path) == _expected(first + second)


def test_a_quiet_but_healthy_binance_connection_is_kept(tmp_path: Path) -> None:
    ex, stop = start_exchange("binance")
    try:
        proc = _start(tmp_path / "calm", ex, "--silence-timeout", "0.4")
        ex.wait(lambda e: e.subscriptions >= 1)
        ex.wait(lambda e: e.probes >= 3)  # LIST_SUBSCRIPTIONS answered each time
        assert ex.connections == 1
        code, _, err = _stop(proc, signal.SIGINT)
    finally:
        stop()
    assert code == 0, err


@pytest.mark.parametrize(("venue", "symbols", "message"), [
    ("binance", "BTCUSDT,NOPEUSDT",
     "error: binance rejected --symbols BTCUSDT,NOPEUSDT: Invalid symbol. (code -1121)"),
    ("coinbase", "BTC-USD,NOPE-USD",
     "error: coinbase: Failed to subscribe: NOPE-USD is not a valid product"),
    ("kraken", "BTC/USD,NOPE/USD",
     "error: kraken refused the subscription: Currency pair not supported NOPE/USD"),
])
def test_a_refused_symbol_exits_2(tmp_path: Path, venue: str, symbols: str, message: str) -> None:
    ex, stop = start_exchange(venue)
    try:
        path = tmp_path / "never"
        result = run_cli("record", str(path), "--feed", venue, "--symbols", symbols,
                         "--feed-url", ex.ws_url, "--rest-url", ex.rest_url, timeout=60)
    finally:
        stop()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == message
    assert not path.exists()  # no empty log left behind


def test_sigkill_then_recover_keeps_every_durable_trade(tmp_path: Path) -> None:
    ex, stop = start_exchange("coinbase")
    try:
        path = tmp_path / "killed"
        tape = Tape("coinbase", seed=5)
        proc = _start(path, ex, "--seal-interval", "0.5")
        ex.wait(lambda e: e.subscriptions >= 1)
        sent: list[TapeTrade] = []
        rng = random.Random(9)
        target = rng.randint(80, 200)
        while _events(path) < target:  # trades keep coming while segments seal
            batch = tape.take(10)
            ex.publish(batch)
            sent += batch
            _wait(functools.partial(_reached, path, len(sent) - 10), proc, "the recorder to keep up")
        durable = _events(path)  # flushed before the kill: a reader could already see them
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        stop()
    assert run_cli("recover", str(path)).returncode == 0
    assert run_cli("verify", str(path)).returncode == 0
    rows = _rows(path)
    assert len(rows) >= durable
    assert rows == _expected(sent)[: len(rows)]  # a prefix of what was sent, each once


# -- the command line ------------------------------------------------------------------------
def test_simulator_options_are_refused_with_feed(tmp_path: Path) -> None:
    result = run_cli("record", str(tmp_path / "x"), "--feed", "kraken", "--seed", "3", "--rate", "5")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --seed, --rate belong(s) to the simulator; --feed "
                                     "records live trades: drop them")
    result = run_cli("record", str(tmp_path / "x"), "--feed-url", "ws://127.0.0.1:1")
    assert (result.returncode, result.stderr.strip()) == (
        2, "error: --feed-url and --rest-url need --feed")
    result = run_cli("record", str(tmp_path / "x"), "--feed", "kraken", "--feed-url", "http://x")
    assert result.stderr.strip() == "error: --feed-url 'http://x' must start with ws:// or wss://"


# -- pure parts ----------------------------------------------------------------------------------
def test_backoff_is_exponential_jittered_and_reproducible() -> None:
    def delays(seed: int) -> list[float]:
        backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(seed))
        return [backoff.next() for _ in range(8)]

    a = delays(1)
    assert a == delays(1) and a != delays(2)
    for n, delay in enumerate(a):
        ceiling = min(8.0, 0.5 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    backoff.next(), backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.5


def test_gap_tracker_and_ranges() -> None:
    tracker = GapTracker(["BTC-USD"])
    assert tracker.check("BTC-USD", 10, 1, "skipped") == ("new", None)
    assert tracker.check("BTC-USD", 11, 2, "skipped") == ("new", None)
    assert tracker.check("BTC-USD", 11, 2, "skipped") == ("duplicate", None)
    verdict, gap = tracker.check("BTC-USD", 15, 3, "skipped")
    assert verdict == "gap" and gap is not None and (gap.first, gap.last, gap.count) == (12, 14, 3)
    gap.resolve({13}, too_late=0, error=None)
    assert gap.missing == [[12, 12], [14, 14]] and gap.backfilled == 1
    assert tracker.summary() == {"gaps": 1, "expected": 3, "backfilled": 1, "missing": 2}
    assert ranges([1, 2, 3, 7, 9, 10]) == [[1, 3], [7, 7], [9, 10]]


def test_rfc3339_keeps_every_digit() -> None:
    assert parse_rfc3339_ns("2024-01-01T00:00:00.123456789Z", "t") == 1_704_067_200_123_456_789
    assert parse_rfc3339_ns("2024-01-01T00:00:01Z", "t") == 1_704_067_201_000_000_000
    assert parse_rfc3339_ns("2014-11-07T08:19:27.028459Z", "t") % 10**9 == 28_459_000
