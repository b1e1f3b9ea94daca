"""The official JavaScript socket.io-client under Node, against the real server."""

from __future__ import annotations

import json
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, make_log
from tests.replay_helpers import ServerProcess

SCRIPT = ROOT / "tests" / "js" / "client.mjs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if shutil.which("node") is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("Node and the pinned npm packages are required: run ./dev test")
    data = tmp_path_factory.mktemp("js")
    make_log(data / "pair", ticks=30_000, symbols="BTC-USD,ETH-USD", segment_rows=10_000)
    with ServerProcess(data) as proc:
        yield proc, data


@pytest.mark.parametrize("encoding", ["json", "arrow"])
def test_node_client_receives_every_tick(server, encoding: str) -> None:  # type: ignore[no-untyped-def]
    proc, data = server
    result = subprocess.run(["node", str(SCRIPT), proc.url, "pair", encoding], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    table = pq.read_table(data / "pair")
    assert summary["count"] == 30_000 and summary["contiguous"] is True
    assert summary["end"] == {"log": "pair", "last_seq": 29_999}
    assert summary["firstPrice"] == table.column("price")[0].as_py()
    assert summary["smaNulls"] == 2 * 4  # SMA(5) is null for each symbol's first 4 ticks
    assert summary["badAck"]["error"]["code"] == "unknown_log"
    assert summary["statuses"][0] == "playing" and summary["statuses"][-1] == "ended"
    last_ts = table.column("ts").cast(pa.int64())[-1].as_py()
    if encoding == "arrow":  # Arrow keeps nanoseconds exact (a JS Number cannot)
        assert int(summary["lastTs"]) == last_ts
    else:
        assert abs(int(float(summary["lastTs"])) - last_ts) < 1_000
