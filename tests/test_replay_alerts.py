"""Live alerts over Socket.IO against the offline engine and `ticktape alerts --json`: full
replays at max and 1000x, other batch and read sizes, from_seq, seeks back to 0, reconnects,
symbol filters, rule selections, broadcasts, arrow clients, and a follower of a recording."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pytest

from analysis.alerts import AlertConfig, evaluate_log, parse_rules
from recorder.log import Log
from replayer.alerting import alert_payload
from replayer.config import ServerConfig
from tests.conftest import ROOT, make_log, run_cli
from tests.replay_helpers import Client, assert_exactly_once, serve_in_process

# Low thresholds, so a short simulated log raises every rule but trade_id_gap several times;
# silence over the whole log, so a symbol filter cannot hide what the rule needs.
RULES = """
[rules.price_move]
threshold = 0.002
window = "60s"
[rules.zscore]
threshold = 5
stride = 75
[rules.volume_spike]
factor = 3
baseline = "10m"
[rules.sma_cross]
fast = 20
slow = 200
[rules.silence]
min_gap = "300ms"
scope = "log"
[rules.trade_id_gap]
enabled = false
"""


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("data")
    make_log(data / "pair", ticks=30_000, symbols="BTC-USD,ETH-USD", rate=20,
             segment_rows=11_000)
    return data


@pytest.fixture(scope="module")
def rules() -> AlertConfig:
    return parse_rules(RULES, "rules.toml")


@pytest.fixture(scope="module")
def expected(logs: Path, rules: AlertConfig) -> list[dict[str, Any]]:
    """The offline alerts, in the wire form (ts_ns added)."""
    alerts = [alert_payload(a) for a in evaluate_log(rules, Log(logs / "pair"))]
    assert {a["rule"] for a in alerts} >= {"price_move", "zscore", "sma_cross", "silence"}
    assert len(alerts) > 20
    return alerts


@dataclass
class Recorder:
    """A raw client that keeps ticks and alerts in the order they arrived."""

    client: Client = field(default_factory=Client)
    events: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client.sio.on("ticks", self._ticks)
        self.client.sio.on("alert", lambda a: self.events.append(("alert", a)))

    def _ticks(self, batch: Any) -> None:
        if isinstance(batch, bytes | bytearray):
            seqs = pa.ipc.open_stream(batch).read_all().column("seq").to_pylist()
        else:
            seqs = batch["seq"]
        self.events.append(("ticks", seqs))
        self.client._ticks({"seq": seqs})

    def alerts(self, since: int = 0) -> list[dict[str, Any]]:
        return [a for kind, a in self.events[since:] if kind == "alert"]

    def seqs(self, since: int = 0) -> list[int]:
        return [s for kind, b in self.events[since:] if kind == "ticks" for s in b]

    def check_order(self) -> None:
        """Every alert follows the ticks batch holding its seq (with only alerts between)."""
        last: list[int] | None = None
        for kind, item in self.events:
            if kind == "ticks":
                last = item
            else:
                assert last is not None and item["seq"] in last, (
                    f"alert at seq {item['seq']} arrived after a batch of "
                    f"{None if last is None else (last[0], last[-1])}")


def _server(logs: Path, rules: AlertConfig, **options: Any) -> ServerConfig:
    return ServerConfig(path=logs, port=0, alert_rules=rules, **options)


async def _replay(url: str, subscribe: dict[str, Any]) -> Recorder:
    rec = Recorder()
    await rec.client.connect(url)
    try:
        ack = await rec.client.call("subscribe", subscribe)
        assert ack["ok"], ack
        await rec.client.wait_end(120)
    finally:
        await rec.client.close()
    return rec


@pytest.mark.parametrize(("speed", "max_batch", "read_rows", "encoding"), [
    ("max", 5_000, 65_536, "json"),
    ("max", 333, 1_000, "json"),   # other batch and chunk boundaries
    ("max", 5_000, 7_777, "arrow"),
    (1000, 5_000, 65_536, "json"),
])
async def test_full_replay_equals_offline(logs: Path, rules: AlertConfig,
                                          expected: list[dict[str, Any]], speed: Any,
                                          max_batch: int, read_rows: int, encoding: str) -> None:
    config = _server(logs, rules, max_batch=max_batch, read_rows=read_rows)
    async with serve_in_process(config) as served:
        rec = await _replay(served.url, {"log": "pair", "speed": speed, "alerts": True,
                                         "encoding": encoding})
        assert_exactly_once(rec.seqs(), 0, 30_000)
        assert rec.alerts() == expected
        rec.check_order()
        metrics = await _get(served.url + "/metrics")
        assert f"ticktape_alerts_sent_total {float(len(expected))}" in metrics


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


def test_cli_json_is_what_a_replay_sends(logs: Path, expected: list[dict[str, Any]],
                                         tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    result = run_cli("alerts", str(logs / "pair"), "--rules", str(rules), "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed == [{k: v for k, v in a.items() if k != "ts_ns"} for a in expected]


async def test_from_seq_and_seek_back_to_zero(logs: Path, rules: AlertConfig,
                                              expected: list[dict[str, Any]]) -> None:
    start = 17_001
    async with serve_in_process(_server(logs, rules)) as served:
        rec = Recorder()
        await rec.client.connect(served.url)
        try:
            ack = await rec.client.call("subscribe", {"log": "pair", "speed": 1000,
                                                      "from_seq": start, "alerts": True})
            assert ack["ok"], ack
            await rec.client.wait_ticks(2_000)
            ack = await rec.client.call("control", {"action": "seek", "seq": 0})
            assert ack["ok"] and ack["seq"] == 0, ack
            await rec.client.wait_end(60)
        finally:
            await rec.client.close()
        rec.check_order()
        split = next(i for i, (kind, b) in enumerate(rec.events) if kind == "ticks" and b[0] == 0)
        before = rec.alerts()[:len(rec.alerts()) - len(rec.alerts(split))]
        # Warmed up from 0: what arrived from from_seq on is the offline list from there.
        later = [a for a in expected if a["seq"] >= start]
        assert before == later[:len(before)]
        assert rec.seqs()[:1] == [start]
        # After the seek back: the whole list, from the start.
        assert_exactly_once(rec.seqs(split), 0, 30_000)
        assert rec.alerts(split) == expected


async def test_reconnect_with_from_seq(logs: Path, rules: AlertConfig,
                                       expected: list[dict[str, Any]]) -> None:
    async with serve_in_process(_server(logs, rules)) as served:
        first = Recorder()
        await first.client.connect(served.url)
        try:
            assert (await first.client.call("subscribe", {"log": "pair", "speed": 1000,
                                                          "alerts": True}))["ok"]
            await first.client.wait_ticks(12_000)
            assert (await first.client.call("control", {"action": "pause"}))["ok"]
            # The paused status leaves after the batch in flight and its alerts.
            deadline = time.monotonic() + 20
            while not any(s["state"] == "paused" for s in first.client.statuses):
                assert time.monotonic() < deadline, "no paused status"
                await asyncio.sleep(0.02)
        finally:
            await first.client.close()
        got = first.seqs()
        assert_exactly_once(got, 0, len(got))
        second = await _replay(served.url, {"log": "pair", "speed": "max", "alerts": True,
                                            "from_seq": got[-1] + 1})
        assert_exactly_once(got + second.seqs(), 0, 30_000)
        assert first.alerts() + second.alerts() == expected
        first.check_order()
        second.check_order()


async def test_symbols_filter_keeps_their_alerts(logs: Path, rules: AlertConfig,
                                                 expected: list[dict[str, Any]]) -> None:
    async with serve_in_process(_server(logs, rules, read_rows=4_096)) as served:
        rec = await _replay(served.url, {"log": "pair", "speed": "max", "alerts": True,
                                         "symbols": ["ETH-USD"], "from_seq": 9_000})
    want = [a for a in expected if a["symbol"] == "ETH-USD" and a["seq"] >= 9_000]
    # silence over the whole log: the gaps it measures span both symbols' trades.
    assert any(a["rule"] == "silence" for a in want)
    assert rec.alerts() == want
    rec.check_order()


async def test_rule_selection_and_errors(logs: Path, rules: AlertConfig,
                                         expected: list[dict[str, Any]]) -> None:
    async with serve_in_process(_server(logs, rules)) as served:
        rec = await _replay(served.url, {"log": "pair", "speed": "max",
                                         "alerts": ["zscore", "price_move"]})
        assert rec.alerts() == [a for a in expected if a["rule"] in ("zscore", "price_move")]
        rec = await _replay(served.url, {"log": "pair", "speed": "max"})
        assert rec.alerts() == [] and len(rec.seqs()) == 30_000  # none unless asked

        client = Client()
        await client.connect(served.url)
        try:
            ack = await client.call("subscribe", {"log": "pair", "alerts": ["zscore", "nope"]})
            assert ack["error"]["code"] == "bad_request"
            assert "unknown rule(s) 'nope'" in ack["error"]["message"]
            ack = await client.call("subscribe", {"log": "pair", "alerts": ["trade_id_gap"]})
            assert ack["error"]["code"] == "bad_request"
            assert "'trade_id_gap' disabled on this server" in ack["error"]["message"]
            ack = await client.call("subscribe", {"log": "pair", "alerts": "yes"})
            assert ack["error"]["code"] == "bad_request"
            assert ack["error"]["message"].startswith("alerts must be true, false or a list")
        finally:
            await client.close()


async def test_broadcast_members_get_alerts(logs: Path, rules: AlertConfig,
                                            expected: list[dict[str, Any]]) -> None:
    async with serve_in_process(_server(logs, rules)) as served:
        with_alerts, without = Recorder(), Recorder()
        for rec in (with_alerts, without):
            await rec.client.connect(served.url)
        try:
            ack = await with_alerts.client.call("subscribe", {
                "log": "pair", "speed": "max", "mode": "broadcast", "alerts": True})
            assert ack["ok"], ack
            ack = await without.client.call("subscribe", {
                "log": "pair", "speed": "max", "mode": "broadcast"})
            assert ack["ok"], ack
            await with_alerts.client.wait_end(60)
            await without.client.wait_end(60)
        finally:
            for rec in (with_alerts, without):
                await rec.client.close()
        # A different alerts selection is a different channel: each started at seq 0.
        assert_exactly_once(with_alerts.seqs(), 0, 30_000)
        assert with_alerts.alerts() == expected
        with_alerts.check_order()
        assert_exactly_once(without.seqs(), 0, 30_000)
        assert without.alerts() == []


async def test_follower_of_a_realtime_recording_gets_alerts(tmp_path: Path) -> None:
    """A recording in real time (its own process); a follower at max reaches its end and
    follows it: it receives alerts of events recorded after it subscribed, and in the end
    exactly the offline alerts of the finished log."""
    rules = parse_rules('[rules.price_move]\nthreshold = 0.00002\nwindow = "1s"\n'
                        'cooldown = "0s"\n', "live.toml")
    data = tmp_path / "data"
    data.mkdir()
    recorder = subprocess.Popen(
        [sys.executable, "-m", "ticktape", "record", str(data / "live"), "--realtime",
         "--rate", "200", "--duration", "6s", "--flush-interval", "0.1", "--seed", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                log = Log(data / "live")
                if log.events > 50:
                    break
            except Exception:  # not a log yet (directory being created)
                pass
            assert time.monotonic() < deadline and recorder.poll() is None, "no recording"
            await asyncio.sleep(0.05)
        async with serve_in_process(ServerConfig(path=data / "live", port=0,
                                                 alert_rules=rules)) as served:
            rec = Recorder()
            await rec.client.connect(served.url)
            try:
                ack = await rec.client.call("subscribe", {"log": "live", "speed": "max",
                                                          "alerts": True})
                assert ack["ok"], ack
                at_subscribe = ack["log"]["events"]
                await rec.client.wait_end(60)
            finally:
                await rec.client.close()
        assert recorder.wait(30) == 0
        alerts = rec.alerts()
        assert any(a["seq"] > at_subscribe for a in alerts), "no alert of a live event"
        rec.check_order()
        final = Log(data / "live")
        assert_exactly_once(rec.seqs(), 0, final.events)
        assert alerts == [alert_payload(a) for a in evaluate_log(rules, final)]
    finally:
        if recorder.poll() is None:
            recorder.kill()
        recorder.communicate(timeout=30)


def test_replay_refuses_a_bad_rules_file(tmp_path: Path, logs: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules.price_move]\nwindow = -1\n')
    result = run_cli("replay", str(logs), "--port", "0", "--rules", str(bad), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (f'error: {bad}: rules.price_move.window: expected a '
                                     f'duration like "60s", got -1')
    result = run_cli("replay", str(logs), "--port", "0", "--rules", str(tmp_path / "none.toml"),
                     timeout=30)
    assert result.returncode == 2 and "cannot read rules file" in result.stderr
