"""`ticktape report`: one self-contained, byte-reproducible Plotly HTML page from a log.

Byte-identical output for the same log and options: fixed div ids (Plotly's default is a
uuid4), no generation time, sorted JSON, deterministic downsampling, plotly.js inlined from
the installed plotly package (nothing is fetched when the page is viewed).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pyarrow as pa
import pyarrow.compute as pc
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from analysis import indicators as ind
from analysis.alerts import AlertConfig, AlertEngine
from analysis.analyze import check_output_path
from analysis.downsample import M4Downsampler
from analysis.errors import AnalysisError, EmptyLogError
from analysis.streaming import IndicatorSpec, StreamingIndicators, symbol_codes
from analysis.summary import BarBuilder, ContentHash, SymbolSummary
from recorder.log import SCHEMA, Log, atomic_path, iso_ns

__all__ = ["ReportConfig", "build_report", "choose_interval"]

INTERVALS = [("1s", 1), ("5s", 5), ("15s", 15), ("1m", 60), ("5m", 300), ("15m", 900),
             ("1h", 3600), ("4h", 14400), ("1d", 86400), ("1w", 604800)]
MAX_BARS = 600
MAX_ANOMALY_MARKERS = 200
MAX_ALERT_MARKERS = 500  # per symbol and rule: the first ones in seq order; all are counted
# Marker shape per alert rule on the price charts (colour: Plotly's default per trace).
ALERT_MARKERS = {"price_move": "triangle-up", "zscore": "diamond", "volume_spike": "square",
                 "sma_cross": "circle-open", "silence": "hourglass", "trade_id_gap": "star"}
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    log: Path
    out: Path
    summary_json: Path | None = None
    sma: tuple[int, ...] = (5,)
    interval_s: float | None = None  # candle interval; None: chosen from the span
    anomaly_window: int = 300
    anomaly_threshold: float = 8.0
    buckets: int = 2_000  # downsampling buckets per series
    batch_rows: int = 262_144
    alert_rules: AlertConfig = field(default_factory=AlertConfig)  # `--rules`; defaults

    def __post_init__(self) -> None:
        if not 100 <= self.buckets <= 100_000:
            raise AnalysisError("buckets must be within [100, 100000]")
        if self.interval_s is not None and self.interval_s < 0.001:
            raise AnalysisError("--interval must be at least 1ms")


def choose_interval(span_ns: int) -> tuple[str, int]:
    """The smallest standard interval that keeps the candles to at most MAX_BARS."""
    for label, seconds in INTERVALS:
        if span_ns / (seconds * 1e9) <= MAX_BARS:
            return label, seconds * 1_000_000_000
    return INTERVALS[-1][0], INTERVALS[-1][1] * 1_000_000_000


def _label(seconds: float) -> str:
    for label, s in INTERVALS:
        if s == seconds:
            return label
    return f"{seconds:g}s"


@dataclass
class _SymbolParts:
    summary: SymbolSummary
    bars: BarBuilder
    price: M4Downsampler
    smas: dict[int, M4Downsampler]
    anomalies: list[tuple[float, int, int, float]] = field(default_factory=list)  # (-|z|, seq, ts, p)
    alert_counts: dict[str, int] = field(default_factory=dict)  # rule -> alerts
    alert_marks: dict[str, list[tuple[int, float, str]]] = field(default_factory=dict)  # (ts, p, msg)


def _collect(config: ReportConfig, log: Log, interval_ns: int, t0: int, t1: int,
             progress: Callable[[int, int | None], None] | None
             ) -> tuple[str, dict[str, _SymbolParts]]:
    spec = IndicatorSpec(sma=config.sma, returns=True, anomaly_window=config.anomaly_window,
                         anomaly_threshold=config.anomaly_threshold,
                         anomaly_stride=max(1, config.anomaly_window // 4))
    engine = StreamingIndicators(spec)
    alert_engine = AlertEngine(config.alert_rules, log.name)
    columns = list(SCHEMA.names) + (["trade_id"] if "trade_id" in log.columns else [])
    hasher = ContentHash()
    parts: dict[str, _SymbolParts] = {}
    done = 0
    for batch in log.iter_batches(batch_rows=config.batch_rows, columns=columns):
        hasher.update(batch)
        ts = batch.column("ts").cast(pa.int64()).to_numpy()
        price = batch.column("price").to_numpy()
        size = batch.column("size").to_numpy()
        seq = batch.column("seq").to_numpy()
        codes, names = symbol_codes(batch.column("symbol"))
        cols = engine.update(batch.column("symbol"), ts, price, size, codes=(codes, names))
        for code, name in enumerate(names):
            idx = slice(None) if len(names) == 1 else np.flatnonzero(codes == code)
            part = parts.get(name)
            if part is None:
                part = parts[name] = _SymbolParts(
                    SymbolSummary(name), BarBuilder(interval_ns),
                    M4Downsampler(t0, t1, config.buckets),
                    {n: M4Downsampler(t0, t1, config.buckets) for n in config.sma})
            s_ts, s_price, s_size = ts[idx], price[idx], size[idx]
            flags = cols["anomaly"][idx]
            part.summary.update(s_ts, s_price, s_size, cols["log_return"][idx], flags)
            part.bars.update(s_ts, s_price, s_size)
            part.price.update(s_ts, s_price)
            for n, sampler in part.smas.items():
                sampler.update(s_ts, cols[f"sma_{n}"][idx])
            if flags.any():
                z = cols["anomaly_z"][idx][flags]
                part.anomalies.extend(zip((-np.abs(z)).tolist(), seq[idx][flags].tolist(),
                                          s_ts[flags].tolist(), s_price[flags].tolist(),
                                          strict=True))
                part.anomalies.sort()
                del part.anomalies[MAX_ANOMALY_MARKERS:]
        first_seq = int(seq[0])
        for alert in alert_engine.update(batch):
            part = parts[alert.symbol]
            part.alert_counts[alert.rule] = part.alert_counts.get(alert.rule, 0) + 1
            marks = part.alert_marks.setdefault(alert.rule, [])
            if len(marks) < MAX_ALERT_MARKERS:
                marks.append((alert.ts, float(price[alert.seq - first_seq]), alert.message))
        done += batch.num_rows
        if progress:
            progress(done, log.events)
    return hasher.hexdigest(), parts


def _ms(ts_ns: np.ndarray) -> np.ndarray:
    return ts_ns / 1e6  # Plotly date axes take milliseconds since the epoch


def _price_figure(name: str, part: _SymbolParts) -> go.Figure:
    fig = go.Figure()
    ts, val = part.price.points()
    fig.add_trace(go.Scattergl(x=_ms(ts), y=val, mode="lines", name=f"{name} price",
                               line={"width": 1, "color": "#1f77b4"}))
    for n, sampler in part.smas.items():
        ts, val = sampler.points()
        fig.add_trace(go.Scattergl(x=_ms(ts), y=val, mode="lines", name=f"SMA({n})",
                                   line={"width": 1}))
    if part.anomalies:
        marks = sorted(part.anomalies, key=lambda a: a[1])
        fig.add_trace(go.Scatter(
            x=_ms(np.array([a[2] for a in marks])), y=[a[3] for a in marks], mode="markers",
            name="anomaly", marker={"color": "#d62728", "size": 8, "symbol": "x"}))
    for rule, points in sorted(part.alert_marks.items()):
        fig.add_trace(go.Scatter(
            x=_ms(np.array([m[0] for m in points])), y=[m[1] for m in points],
            mode="markers", name=f"alert: {rule}", text=[m[2] for m in points],
            hoverinfo="x+y+text",
            marker={"size": 10, "symbol": ALERT_MARKERS.get(rule, "circle"),
                    "line": {"width": 1}}))
    fig.update_layout(title=f"{name}: price and SMA (min/max per bucket)", xaxis_type="date",
                      height=420, template="plotly_white", margin={"t": 50, "b": 40})
    return fig


def _candles_figure(name: str, bars: dict[str, np.ndarray], interval: str) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28],
                        vertical_spacing=0.03)
    x = _ms(bars["start"])
    fig.add_trace(go.Candlestick(x=x, open=bars["open"], high=bars["high"], low=bars["low"],
                                 close=bars["close"], name=f"{name} {interval}"), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=bars["volume"], name="volume", marker_color="#7f7f7f"),
                  row=2, col=1)
    fig.update_layout(title=f"{name}: {interval} candles and volume", height=520,
                      template="plotly_white", xaxis_rangeslider_visible=False,
                      margin={"t": 50, "b": 40}, showlegend=False)
    fig.update_xaxes(type="date")
    return fig


def _bar_returns(bars: dict[str, np.ndarray]) -> np.ndarray:
    return np.diff(np.log(bars["close"])) if len(bars["close"]) > 1 else np.empty(0)


def _returns_figure(per_symbol: dict[str, dict[str, np.ndarray]], interval: str) -> go.Figure:
    fig = go.Figure()
    for name, bars in per_symbol.items():
        r = _bar_returns(bars) * 1e4
        if len(r) == 0:
            continue
        counts, edges = np.histogram(r, bins=60)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, name=name,
                             opacity=0.7))
    fig.update_layout(title=f"Distribution of {interval} log returns (basis points)",
                      barmode="overlay", height=380, template="plotly_white",
                      xaxis_title="bp", yaxis_title="bars", margin={"t": 50, "b": 40})
    return fig


def _volatility_figure(per_symbol: dict[str, dict[str, np.ndarray]], interval: str,
                       interval_ns: int) -> go.Figure:
    fig = go.Figure()
    for name, bars in per_symbol.items():
        r = _bar_returns(bars)
        window = max(2, min(30, len(r) // 4))
        if len(r) < window:
            continue
        years = window * interval_ns / ind.NS_PER_YEAR
        vol = np.sqrt(ind.window_sum(np.square(r), window) / years)
        fig.add_trace(go.Scatter(x=_ms(bars["start"][1:]), y=vol, mode="lines", name=name))
    fig.update_layout(title=f"Rolling realized volatility, annualized ({interval} returns)",
                      xaxis_type="date", height=380, template="plotly_white",
                      yaxis_tickformat=".0%", margin={"t": 50, "b": 40})
    return fig


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{value:+.2%}"
    if kind == "pctu":
        return f"{value:.2%}"
    if kind == "int":
        return f"{value:,}"
    return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.2f}"


def _summary_table(symbols: dict[str, dict[str, Any]], rules: list[str]) -> str:
    rows = [("events", "events", "int"), ("first", "first_ts", "ts"), ("last", "last_ts", "ts"),
            ("open", "open", "num"), ("high", "high", "num"), ("low", "low", "num"),
            ("close", "close", "num"), ("return", "return", "pct"),
            ("volatility (ann.)", "volatility_annualized", "pctu"), ("VWAP", "vwap", "num"),
            ("volume", "volume", "num"), ("max drawdown", "max_drawdown", "pct"),
            ("anomalies", "anomalies", "int")]
    rows += [(f"alerts: {rule}", f"alerts.{rule}", "int") for rule in rules]
    head = "".join(f"<th>{html.escape(s)}</th>" for s in symbols)
    body = []
    for label, key, kind in rows:
        cells = []
        for stats in symbols.values():
            value = stats["alerts"][key[7:]] if key.startswith("alerts.") else stats[key]
            text = html.escape(str(value)) if kind == "ts" else _fmt(value, kind)
            cells.append(f"<td>{text}</td>")
        body.append(f"<tr><th scope='row'>{label}</th>{''.join(cells)}</tr>")
    return (f"<table class='summary'><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#14213d;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:1.4em}
header code{color:#fca311}main{max-width:1200px;margin:auto;padding:12px 16px}
section{background:#fff;border:1px solid #e5e5e5;border-radius:8px;margin:12px 0;padding:8px}
table.summary{border-collapse:collapse;width:100%}table.summary td,table.summary th{padding:4px 10px;
border-bottom:1px solid #eee;text-align:right}table.summary th[scope=row]{text-align:left}
pre{white-space:pre-wrap;font-size:12px;background:#f4f4f4;padding:8px;border-radius:4px}
"""


def build_report(config: ReportConfig,
                 progress: Callable[[int, int | None], None] | None = None) -> dict[str, Any]:
    """Write the HTML report (and summary JSON); return the summary."""
    log = Log(config.log)
    info = log.info()
    if info.events == 0 or info.first_ts is None or info.last_ts is None:
        raise EmptyLogError(f"log {log.name} is empty: nothing to report")
    check_output_path(config.out, config.log)
    if config.summary_json is not None:
        check_output_path(config.summary_json, config.log)
    span_ns = info.last_ts - info.first_ts
    longest = max(config.sma)
    if longest > info.events:
        raise AnalysisError(f"--sma {longest} is longer than the log ({info.events} events)")
    if config.interval_s is None:
        interval, interval_ns = choose_interval(span_ns)
    else:
        interval_ns = round(config.interval_s * 1e9)
        interval = _label(config.interval_s)
        if interval_ns > max(span_ns, 1):
            raise AnalysisError(f"--interval {interval} is longer than the log's span "
                                f"({span_ns / 1e9:g} s)")
        if span_ns / interval_ns > 20_000:
            raise AnalysisError(f"--interval {interval} makes {span_ns // interval_ns:,} "
                                "candles; choose at least 1/20000 of the span")
    digest, parts = _collect(config, log, interval_ns, info.first_ts, info.last_ts, progress)
    bars = {name: part.bars.bars() for name, part in sorted(parts.items())}
    rules = [r.name for r in config.alert_rules.enabled]
    symbols = {name: {**part.summary.to_json(), "first_ts": iso_ns(part.summary.first_ts),
                      "last_ts": iso_ns(part.summary.last_ts),
                      "alerts": {r: part.alert_counts.get(r, 0) for r in rules}}
               for name, part in sorted(parts.items())}
    summary = {
        "log": log.name, "content_sha256": digest, "events": info.events,
        "first_ts": iso_ns(info.first_ts), "last_ts": iso_ns(info.last_ts),
        "interval": interval, "symbols": symbols, "ticktape": info.metadata,
        "venues": _venues(log),
        "alerts": {r: sum(s["alerts"][r] for s in symbols.values()) for r in rules},
        "options": {"sma": list(config.sma), "anomaly_window": config.anomaly_window,
                    "anomaly_threshold": config.anomaly_threshold, "buckets": config.buckets,
                    "alert_rules": config.alert_rules.to_json()},
    }
    figures: list[tuple[str, go.Figure]] = []
    for name, part in sorted(parts.items()):
        slug = "".join(c if c.isalnum() else "-" for c in name.lower())
        figures.append((f"price-{slug}", _price_figure(name, part)))
        figures.append((f"candles-{slug}", _candles_figure(name, bars[name], interval)))
    figures.append(("returns", _returns_figure(bars, interval)))
    figures.append(("volatility", _volatility_figure(bars, interval, interval_ns)))
    page = _html_page(summary, figures)
    _atomic_write(config.out, page.encode())
    if config.summary_json is not None:
        _atomic_write(config.summary_json,
                      (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return summary


def _venues(log: Log) -> list[str]:
    """The venues of a real log (its `venue` column), or [] for a simulated one."""
    if "venue" not in log.columns:
        return []
    found: set[str] = set()
    for batch in log.iter_batches(columns=["venue"]):
        found.update(v for v in pc.unique(batch.column(0)).to_pylist() if v is not None)
    return sorted(found)


def _origin(summary: dict[str, Any]) -> str:
    """Where the events come from: the seed of a simulated log, the venue(s) of a real one."""
    meta = summary["ticktape"]
    if "seed" in meta:
        return f"seed <code>{html.escape(str(meta['seed']))}</code>"
    venues = summary.get("venues") or []
    return f"venue <code>{html.escape(', '.join(venues) or 'unknown')}</code>"


def _html_page(summary: dict[str, Any], figures: list[tuple[str, go.Figure]]) -> str:
    meta = summary["ticktape"]
    simulated = meta.get("source") == "simulator"
    divs = "\n".join(
        "<section>" + pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                                  config=PLOT_CONFIG, default_height="auto") + "</section>"
        for div_id, fig in figures)
    params = html.escape(json.dumps(meta, indent=2, sort_keys=True))
    title = html.escape(f"ticktape report: {summary['log']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>{title}</h1>
<div>{summary['events']:,} events, {html.escape(str(summary['first_ts']))} → \
{html.escape(str(summary['last_ts']))} · source <code>{html.escape(str(meta.get('source')))}</code> \
· {_origin(summary)}</div>
<div>content SHA-256 <code>{summary['content_sha256']}</code></div></header>
<main>
<section><h2>Summary</h2>{_summary_table(summary['symbols'], list(summary['alerts']))}
<details><summary>{"Generator parameters (regenerate with <code>ticktape verify --regenerate</code>)"
                     if simulated else "Log metadata"}</summary>
<pre>{params}</pre></details></section>
{divs}
</main></body></html>
"""


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise AnalysisError(f"cannot write {path}: {exc.strerror or exc}") from exc
