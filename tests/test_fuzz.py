"""Whatever a client sends under 64 KiB gets an acknowledgement, and the server carries on.

Seeded fuzzing with real clients: python-socketio's AsyncClient for structured payloads, and
raw Engine.IO frames over aiohttp's WebSocket client for what AsyncClient cannot send.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from replayer.config import ServerConfig
from tests.conftest import make_log
from tests.replay_helpers import Client, Served, assert_exactly_once, serve_in_process

SEED = 20_240_608
PAYLOADS = 1_000
CODES = {"bad_request", "unknown_log", "not_allowed", "log_error"}
FIELDS = ["log", "speed", "from_seq", "symbols", "sma", "encoding", "loop", "mode", "action",
          "seq", "ts", "alerts"]
STRINGS = ["", "tiny", "nope", "../tiny", "/etc/passwd", "max", "pause", "resume", "seek",
           "speed", "json", "arrow", "broadcast", "stream", "BTC-USD", "2024-01-01T00:00:00Z",
           "\ud800", "\udfff", "a\ud83dz", "\x00", "\u202egnp.exe", "💥", "é" * 40, "x" * 3_000,
           "'\"\\", "${jndi:x}", "<script>"]
NUMBERS: list[Any] = [0, 1, -1, 7, 10_000, 10_001, 2**53, 2**63, -(2**63) - 1, 10**30, -(10**30),
                      0.5, -0.0, 1e-300, 1e308, float("nan"), float("inf"), float("-inf")]
TINY = 50


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fuzz")
    make_log(data / "tiny", ticks=TINY, rate=1_000)
    return data


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[Served]:
    async with serve_in_process(ServerConfig(path=data_dir, port=0)) as s:
        yield s


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth > 4 or kind < 0.35:
        return rng.choice([*STRINGS, rng.choice(NUMBERS), True, False, None])
    if kind < 0.45:
        return rng.choice(NUMBERS)
    if kind < 0.5:  # deep nesting, well below the stdlib encoder's recursion limit
        nested: Any = rng.choice(STRINGS)
        for _ in range(rng.randint(50, 400)):
            nested = [nested] if rng.random() < 0.5 else {"a": nested}
        return nested
    if kind < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(FIELDS + STRINGS): _value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _payload(rng: random.Random) -> tuple[str, Any]:
    event = rng.choice(["subscribe"] * 4 + ["control"] * 4 + ["unsubscribe", "\ud800x", "ticks",
                                                               "é", "status"])
    if rng.random() < 0.6:  # mostly objects with the protocol's own field names
        payload: Any = {rng.choice(FIELDS if rng.random() < 0.8 else STRINGS): _value(rng, 1)
                        for _ in range(rng.randint(0, 5))}
    else:
        payload = _value(rng)
    return event, payload


def _fuzz(seed: int, count: int) -> list[tuple[str, Any]]:
    rng = random.Random(seed)
    out: list[tuple[str, Any]] = []
    while len(out) < count:
        event, payload = _payload(rng)
        if len(json.dumps([event, payload])) < 60_000:  # under Engine.IO's 64 KiB cap
            out.append((event, payload))
    return out


def _check_ack(ack: Any, what: object) -> None:
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), (what, ack)
    if not ack["ok"]:
        error = ack["error"]
        assert error["code"] in CODES, (what, ack)  # never "internal": no unexpected exception
        message = error["message"]
        # Client input is echoed escaped (ASCII) and truncated, never raw.
        assert isinstance(message, str) and message and message.isascii(), (what, ack)
        assert len(message) <= 400, (what, len(message))


async def test_every_fuzzed_payload_gets_an_ack(served: Served) -> None:
    cases = _fuzz(SEED, PAYLOADS)
    assert any("\ud800" in json.dumps(c, ensure_ascii=False) for c in cases)  # surrogates in
    c = Client()
    await c.connect(served.url)
    try:
        missing: list[tuple[str, Any]] = []
        for start in range(0, len(cases), 100):
            chunk = cases[start:start + 100]
            acks = await asyncio.gather(*(c.sio.call(e, p, timeout=5) for e, p in chunk),
                                        return_exceptions=True)
            for case, ack in zip(chunk, acks, strict=True):
                if isinstance(ack, socketio.exceptions.TimeoutError):
                    missing.append(case)
                else:
                    _check_ack(ack, case)
        assert not missing, f"{len(missing)} payloads got no ack, e.g. {ascii(missing[:3])[:500]}"
        # The fuzzing connection still works, and so does everyone else's.
        assert (await c.call("subscribe", {"log": "tiny", "speed": "max"}))["ok"]
    finally:
        await c.close()
    await _server_is_well(served)


async def _server_is_well(served: Served) -> None:
    other = Client()
    try:
        await other.connect(served.url)
        assert (await other.call("subscribe", {"log": "tiny", "speed": "max"}))["ok"]
        await other.wait_end(30)
        assert_exactly_once(other.seqs(), 0, TINY)
    finally:
        await other.close()
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/healthz") as resp:
        assert resp.status == 200


class RawClient:
    """Engine.IO v4 + Socket.IO v5 by hand over a WebSocket, to send frames no library would."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 1

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, url: str) -> RawClient:
        ws = await http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket")
        client = cls(ws)
        assert (await client._receive()).startswith("0{")  # Engine.IO open
        await ws.send_str("40")
        assert (await client._receive()).startswith("40{")  # Socket.IO connect
        return client

    async def _receive(self) -> str:
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data == "2":  # Engine.IO ping
                await self.ws.send_str("3")
                continue
            return str(msg.data)

    async def call(self, body: str) -> Any:
        """Send `42<id><body>` and return the acknowledgement's payload."""
        ack_id, self.next_id = self.next_id, self.next_id + 1
        await self.ws.send_str(f"42{ack_id}{body}")
        while True:
            text = await self._receive()
            prefix = f"43{ack_id}"
            if text.startswith(prefix):
                return json.loads(text[len(prefix):])[0]


RAW_FRAMES = [
    '{"a": 1}', "[]", "[5]", "[null, {}]", '"text"', "null", "true", "[",
    '["connect", {}]', '["disconnect"]', '["connect_error", {}]',
    '["subscribe", {"log": "\\ud800"}]', '["\\udfff", {}]', '["subscribe", {"\\ud800": 1}]',
    '["control", {"action": "\\ud800"}]', '["control", {"action": "seek", "ts": "\\udc00"}]',
    '["control", {"action": "speed", "speed": NaN}]', '["subscribe", {"log": "tiny", "speed": '
    'Infinity}]', '["subscribe", {"log": "tiny", "from_seq": 1' + "0" * 5_000 + "}]",
    '["subscribe", {"log": "tiny", "sma": 1e999}]',
    '["subscribe", ' + "[" * 25_000 + "]" * 25_000 + "]",
    '["subscribe", {"log": "tiny"}, {"log": "tiny"}]',
]


async def test_raw_frames_each_get_an_ack(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        raw = await RawClient.connect(http, served.url)
        for body in RAW_FRAMES:
            assert len(body) < 64 * 1024
            ack = await raw.call(body)
            assert ack["ok"] is False, (body[:80], ack)
            _check_ack(ack, body[:80])
        ack = await raw.call('["subscribe", {"log": "tiny", "speed": "max"}]')
        assert ack["ok"] is True  # the same connection carries on
        await raw.ws.close()
    await _server_is_well(served)
