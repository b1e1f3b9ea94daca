"""The CLI as users see it: help everywhere, exact one-line errors, exit codes, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, make_log, run_cli
from ticktape.cli import build_parser, main


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


def test_every_command_has_help_and_docs(capsys: pytest.CaptureFixture[str]) -> None:
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for command in _commands():
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: ticktape " + command), command
        assert f"ticktape {command}" in docs, f"docs/ never mention `ticktape {command}`"


def _err(result) -> str:  # type: ignore[no-untyped-def]
    assert "Traceback" not in result.stderr
    return str(result.stderr.strip().splitlines()[-1])


def test_record_errors_are_one_line(tmp_path: Path) -> None:
    cases = [
        (["record", str(tmp_path / "a"), "--rate", "0"],
         "error: rate must be > 0 and <= 1e7 events/s, got 0.0"),
        (["record", str(tmp_path / "a"), "--param", "volatility=-0.5"],
         "error: BTC-USD: volatility must be a finite number >= 0, got -0.5"),
        (["record", str(tmp_path / "a"), "--symbols", "btc"],
         "error: symbol 'btc' is malformed: expected BASE-QUOTE in capitals, e.g. BTC-USD"),
        (["record", str(tmp_path / "a"), "--duration", "ten minutes"],
         "error: duration 'ten minutes' is malformed: expected e.g. 90s, 10m, 6h, 2d"),
        (["record", str(tmp_path / "a"), "--ticks", "-3"], "error: --ticks must be > 0, got -3"),
        (["record", str(tmp_path / "a"), "--clock", "wall", "--ticks", "5"],
         "error: --clock wall needs --realtime"),
        (["record", "/proc/ticktape-log", "--ticks", "5"],
         "error: cannot write /proc/ticktape-log: No such file or directory"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert _err(result) == message
    assert not (tmp_path / "a").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run_cli("record", str(tmp_path / "a"), "--ticks", "five")
    assert result.returncode == 2 and "invalid int value" in _err(result)
    assert run_cli("frobnicate").returncode == 2
    assert run_cli().returncode == 2


def test_existing_log_needs_overwrite(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=100)
    before = {p.name: p.read_bytes() for p in log.iterdir()}
    result = run_cli("record", str(log), "--ticks", "50")
    assert result.returncode == 2
    assert _err(result) == f"error: log {log} exists; pass --overwrite to replace it"
    assert {p.name: p.read_bytes() for p in log.iterdir()} == before
    result = run_cli("record", str(log), "--ticks", "50", "--overwrite")
    assert result.returncode == 0 and "recorded 50 events" in result.stdout


def test_info_json_and_text(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=1_234, symbols="BTC-USD,ETH-USD")
    result = run_cli("info", str(log), "--json")
    assert result.returncode == 0
    info = json.loads(result.stdout)
    for key in ("name", "events", "first_seq", "last_seq", "first_ts", "last_ts", "symbols",
                "bytes", "ticktape"):
        assert key in info
    assert info["events"] == 1_234 and info["symbols"] == ["BTC-USD", "ETH-USD"]
    assert info["first_ts"].endswith("Z")
    text = run_cli("info", str(log)).stdout
    assert "1,234" in text and "BTC-USD, ETH-USD" in text


def test_verify_and_recover_exit_codes(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=3_000, segment_rows=1_000)
    ok = run_cli("verify", str(log), "--regenerate", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["regenerated"] is True
    # Tamper with one price: regeneration must notice, plain checks need not.
    seg = log / "seg-000000001000.parquet"
    table = pq.read_table(seg)
    prices = table.column("price").to_pylist()
    prices[10] += 0.01
    pq.write_table(table.set_column(3, "price", pa.array(prices)), seg)
    assert run_cli("verify", str(log)).returncode == 0
    bad = run_cli("verify", str(log), "--regenerate")
    assert bad.returncode == 1 and "price differs from the simulator at seq 1010" in bad.stdout
    assert run_cli("verify", str(tmp_path / "nope")).returncode == 2
    assert _err(run_cli("verify", str(tmp_path / "nope"))) == \
        f"error: no such log: {tmp_path / 'nope'}"
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    result = run_cli("info", str(foreign))
    assert result.returncode == 2
    assert _err(result) == (f"error: {foreign} is Parquet but not a ticktape log "
                            "(no 'ticktape' metadata)")
    result = run_cli("recover", str(log))
    assert result.returncode == 0 and "nothing to recover" in result.stdout


def test_truncated_segment_messages(tmp_path: Path) -> None:
    log = make_log(tmp_path / "btc", ticks=3_000, segment_rows=1_000)
    seg = log / "seg-000000002000.parquet"
    seg.write_bytes(seg.read_bytes()[:500])
    result = run_cli("info", str(log))
    assert result.returncode == 1
    assert _err(result) == ("error: segment seg-000000002000.parquet is unreadable "
                            "(truncated or corrupt): run `ticktape verify`")
    result = run_cli("verify", str(log))
    assert result.returncode == 1 and "truncated or corrupt" in result.stdout


def test_verify_regenerate_on_a_real_log_says_it_cannot_and_exits_0(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa

    from recorder.log import LogWriter, make_batch

    seq = np.arange(100, dtype=np.int64)
    with LogWriter(tmp_path / "real", {"source": "import:binance-trades"}) as writer:
        writer.append(make_batch(seq, 1_700_000_000_000_000_000 + seq, pa.array(["BTC-USDT"] * 100),
                                 np.full(100, 95_000.0), np.ones(100), pa.array(["buy"] * 100)))
    text = run_cli("verify", str(tmp_path / "real"), "--regenerate")
    assert text.returncode == 0, text.stderr
    assert "cannot regenerate: source 'import:binance-trades' is not the simulator" in text.stdout
    as_json = run_cli("verify", str(tmp_path / "real"), "--regenerate", "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["ok"] and report["regenerated"] is None
    assert "import:binance-trades" in report["cannot_regenerate"]
