"""`ticktape alerts` and alerts in `ticktape report`, end to end on recorded logs: text and
--json output against the engine, Parquet output, errors, report markers and counts, bytes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.alerts import ALERT_SCHEMA, Alert, evaluate_log, load_rules
from recorder.log import SCHEMA, Log, LogWriter, make_batch
from tests.conftest import make_log, run_cli

# Low thresholds so a short simulated log raises several rules (defaults raise few alerts).
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
min_gap = "1s"
scope = "symbol"
"""


@pytest.fixture(scope="module")
def pair_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_log(tmp_path_factory.mktemp("logs") / "pair", ticks=40_000,
                    symbols="BTC-USD,ETH-USD", rate=20, segment_rows=15_000)


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    return path


def _engine_alerts(log: Path, rules: Path | None, batch_rows: int = 262_144) -> list[Alert]:
    return list(evaluate_log(load_rules(rules), Log(log), batch_rows=batch_rows))


def test_json_lists_the_engine_alerts(pair_log: Path, rules_file: Path) -> None:
    result = run_cli("alerts", str(pair_log), "--rules", str(rules_file), "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    expected = _engine_alerts(pair_log, rules_file, batch_rows=3_001)  # other batching
    assert listed == [a.to_json() for a in expected]
    assert {a["rule"] for a in listed} >= {"zscore", "sma_cross", "silence", "price_move"}
    first = listed[0]
    assert list(first) == ["log", "seq", "ts", "symbol", "rule", "value", "threshold", "message"]
    assert first["log"] == "pair" and first["ts"].endswith("Z")
    events = pd.read_parquet(pair_log).set_index("seq")
    for alert in listed:  # each alert names its own event
        assert events.loc[alert["seq"], "symbol"] == alert["symbol"]
        assert pd.Timestamp(events.loc[alert["seq"], "ts"]).isoformat().startswith(
            alert["ts"][:19])


def test_text_output_and_summary(pair_log: Path, rules_file: Path) -> None:
    result = run_cli("alerts", str(pair_log), "--rules", str(rules_file))
    assert result.returncode == 0, result.stderr
    alerts = _engine_alerts(pair_log, rules_file)
    assert result.stdout.splitlines() == [a.line() for a in alerts]
    counts = Counter(a.rule for a in alerts)
    order = ["price_move", "zscore", "volume_spike", "sma_cross", "silence", "trade_id_gap"]
    assert result.stderr.strip() == (
        f"{len(alerts):,} alerts over 40,000 events ("
        + ", ".join(f"{r} {counts.get(r, 0):,}" for r in order) + ")")
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"{alerts[0].to_json()['ts']}  seq {alerts[0].seq}  ")


def test_defaults_run_without_a_rules_file(pair_log: Path) -> None:
    result = run_cli("alerts", str(pair_log), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [a.to_json() for a in _engine_alerts(pair_log, None)]


def test_parquet_output_roundtrip_and_determinism(pair_log: Path, rules_file: Path,
                                                  tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"a{i}.parquet"
        result = run_cli("alerts", str(pair_log), "--rules", str(rules_file), "-o", str(out),
                         "--json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    table = pq.read_table(tmp_path / "a0.parquet")
    assert table.schema.remove_metadata() == ALERT_SCHEMA
    alerts = _engine_alerts(pair_log, rules_file)
    assert summary["alerts"] == table.num_rows == len(alerts)
    assert summary["by_rule"] == {r: sum(a.rule == r for a in alerts) for r in summary["by_rule"]}
    rows = table.to_pylist()
    for row, alert in zip(rows, alerts, strict=True):
        assert row["seq"] == alert.seq and row["rule"] == alert.rule
        assert row["value"] == alert.value and row["message"] == alert.message
        assert row["ts"].value == alert.ts  # pandas Timestamp, ns exact
    meta = json.loads(table.schema.metadata[b"ticktape_alerts"])
    assert meta["log"] == "pair" and meta["rules"]["zscore"]["stride"] == 75


def test_json_is_byte_identical_across_runs(pair_log: Path, rules_file: Path) -> None:
    runs = [run_cli("alerts", str(pair_log), "--rules", str(rules_file), "--json").stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) > 100


def test_errors_are_one_line(pair_log: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules.price_move]\nwindow = -1\n')
    result = run_cli("alerts", str(pair_log), "--rules", str(bad))
    assert (result.returncode, result.stderr) == (
        2, f'error: {bad}: rules.price_move.window: expected a duration like "60s", got -1\n')
    assert result.stdout == ""
    result = run_cli("alerts", str(pair_log), "--rules", str(tmp_path / "none.toml"))
    assert result.returncode == 2
    assert result.stderr == (f"error: cannot read rules file {tmp_path / 'none.toml'}: "
                             "No such file or directory\n")
    result = run_cli("alerts", str(tmp_path / "nope"))
    assert (result.returncode, result.stderr) == (2, f"error: no such log: {tmp_path / 'nope'}\n")
    result = run_cli("alerts", str(pair_log), "-o", str(pair_log / "a.parquet"))
    assert result.returncode == 2
    assert result.stderr == f"error: output {pair_log / 'a.parquet'} must not be inside the " \
                            f"log {pair_log}\n"
    assert run_cli("alerts", "--help").stdout.count("--rules FILE") >= 1


def _plot_data(page: str, div_id: str) -> list[dict[str, Any]]:
    """The traces Plotly draws in one div (decoded from the page's newPlot call)."""
    start = page.index(f'"{div_id}",', page.index(f'id="{div_id}"')) + len(div_id) + 3
    data, _ = json.JSONDecoder().raw_decode(page[page.index("[", start):])
    assert isinstance(data, list)
    return data


def test_report_marks_and_counts_alerts(pair_log: Path, rules_file: Path,
                                        tmp_path: Path) -> None:
    pages = []
    for i in range(2):
        html, summary_path = tmp_path / f"r{i}.html", tmp_path / f"s{i}.json"
        result = run_cli("report", str(pair_log), "-o", str(html), "--json", str(summary_path),
                         "--rules", str(rules_file))
        assert result.returncode == 0, result.stderr
        pages.append((html.read_bytes(), summary_path.read_bytes()))
    assert pages[0] == pages[1]  # still byte-identical with alerts
    page = pages[0][0].decode()
    summary = json.loads(pages[0][1])
    alerts = _engine_alerts(pair_log, rules_file)
    prices = pd.read_parquet(pair_log).set_index("seq")["price"]
    for symbol in ("BTC-USD", "ETH-USD"):
        mine = [a for a in alerts if a.symbol == symbol]
        counts = Counter(a.rule for a in mine)
        assert summary["symbols"][symbol]["alerts"] == {
            r: counts.get(r, 0) for r in summary["symbols"][symbol]["alerts"]}
        traces = {t["name"]: t for t in _plot_data(page, f"price-{symbol.lower()}")
                  if t["name"].startswith("alert: ")}
        assert set(traces) == {f"alert: {r}" for r in counts}
        for rule in counts:
            trace = traces[f"alert: {rule}"]
            shown = [a for a in mine if a.rule == rule][:500]
            assert trace["text"] == [a.message for a in shown]
            assert trace["y"] == [prices[a.seq] for a in shown]  # at the event's price
    assert summary["alerts"] == {r: sum(a.rule == r for a in alerts) for r in summary["alerts"]}
    assert summary["options"]["alert_rules"]["sma_cross"]["slow"] == 200
    for rule in summary["alerts"]:  # a summary row per rule
        assert f"<th scope='row'>alerts: {rule}</th>" in page


def _real_log(path: Path, ids: list[str] | None) -> Path:
    n = 2_000
    rng = np.random.default_rng(3)
    ts = 1_735_689_600_000_000_000 + np.cumsum(rng.integers(1, 10**9, n))
    price = 94_000 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    base = make_batch(np.arange(n, dtype=np.int64), ts, pa.array(["BTC-USDT"] * n), price,
                      np.full(n, 0.01), pa.array(rng.choice(["buy", "sell"], n)))
    columns, names = list(base.columns), list(SCHEMA.names)
    if ids is not None:
        columns.append(pa.array(ids))
        names.append("trade_id")
    with LogWriter(path, {"source": "import:binance-trades"},
                   optional_columns=("trade_id",) if ids is not None else ()) as writer:
        writer.append(pa.RecordBatch.from_arrays(columns, names=names))
    return path


def test_trade_id_gaps_on_a_real_log(tmp_path: Path) -> None:
    ids = [str(5_000 + i) for i in range(2_000)]
    ids[700:] = [str(int(i) + 3) for i in ids[700:]]  # 3 trades missing before row 700
    log = _real_log(tmp_path / "btc", ids)
    result = run_cli("alerts", str(log), "--json")
    assert result.returncode == 0, result.stderr
    gaps = [a for a in json.loads(result.stdout) if a["rule"] == "trade_id_gap"]
    assert [(a["seq"], a["value"], a["threshold"]) for a in gaps] == [(700, 3.0, 1.0)]
    assert gaps[0]["message"] == "BTC-USDT trade_id jumped from 5699 to 5703: 3 ids missing"
    plain = _real_log(tmp_path / "plain", None)
    result = run_cli("alerts", str(plain), "--json")
    assert not [a for a in json.loads(result.stdout) if a["rule"] == "trade_id_gap"]
