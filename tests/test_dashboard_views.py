"""The dashboard's views in real headless Chromium against a real `ticktape replay`: candlesticks
and the volume panel, one chart per symbol, the overview strip, keyboard control, the view in
the URL, and alerts (as soon as the server sends them)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from playwright.sync_api import Browser

from analysis.alerts import evaluate_log, load_rules
from recorder.log import Log, LogWriter, make_batch
from tests.conftest import make_log
from tests.replay_helpers import Client, ServerProcess
from tests.test_dashboard import Dashboard

BUY, SELL = "#22c55e", "#ef4444"  # the dashboard's taker-side colours
SPIKE_AT = 3_000  # the crafted log's price jumps 5 % at this seq


def _spike_log(path: Path) -> Path:
    """One symbol at 10 ticks/s, a quiet random walk that jumps 5 % at SPIKE_AT: the default
    rules raise `price_move` (1 % within 60 s) there."""
    rng = np.random.default_rng(11)
    n = 6_000
    seq = np.arange(n)
    ts = 1_704_067_200_000_000_000 + seq * 100_000_000
    price = np.round(100 * np.exp(np.cumsum(rng.normal(0, 2e-5, n))), 4)
    price[SPIKE_AT:] *= 1.05
    with LogWriter(path, {"source": "test"}) as writer:
        writer.append(make_batch(seq, ts, pa.array(["BTC-USD"] * n), price,
                                 rng.uniform(0.01, 1.0, n), pa.array(rng.choice(["buy", "sell"], n))))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("views")
    make_log(d / "demo", ticks=60_000, symbols="BTC-USD,ETH-USD", rate=20)
    _spike_log(d / "spike")
    return d


@pytest.fixture(scope="module")
def server(data: Path) -> Iterator[ServerProcess]:
    with ServerProcess(data) as proc:
        yield proc


def _traces(dash: Dashboard, chart: str = "chart") -> list[dict[str, Any]]:
    return list(dash.page.evaluate(
        f"document.getElementById('{chart}').data.map(t => ({{type: t.type, name: t.name,"
        " x: Array.from(t.x || []), y: Array.from(t.y || []), yaxis: t.yaxis || 'y',"
        " text: Array.isArray(t.text) ? t.text : [], color: t.marker ? t.marker.color : null}))"))


def test_candlesticks_with_a_volume_panel_coloured_by_taker_side(browser: Browser, server: ServerProcess,
                                                                 artifacts: Path) -> None:
    dash = Dashboard(browser, server.url + "/?log=demo&symbols=BTC-USD&mode=candles&interval=5s")
    try:
        dash.play("100")
        # Candlesticks with points, and Plotly drew their boxes.
        dash.wait("(document.getElementById('chart').data.find(t => t.type === 'candlestick')"
                  "?.x.length || 0) > 5"
                  " && document.querySelectorAll('#chart .boxlayer .trace path').length > 5")
        traces = {t["name"]: t for t in _traces(dash)}
        assert traces["price"]["type"] == "candlestick"
        buy, sell = traces["buy volume"], traces["sell volume"]
        assert (buy["type"], buy["yaxis"], buy["color"]) == ("bar", "y2", BUY)
        assert (sell["type"], sell["yaxis"], sell["color"]) == ("bar", "y2", SELL)
        assert sum(buy["y"]) > 0 and sum(sell["y"]) > 0
        # Bars sit on 5 s boundaries (x is the bar's middle).
        assert all((x - 2_500) % 5_000 == 0 for x in buy["x"])
        assert dash.page.locator("#chart .barlayer .point path").count() > 0
        layout = dash.page.evaluate("document.getElementById('chart').layout")
        assert layout["yaxis2"]["domain"][1] < layout["yaxis"]["domain"][0]  # its own panel
        dash.page.screenshot(path=str(artifacts / "dashboard-candles.png"), full_page=True)
        # Back to a line, with the `c` key; the volume panel stays.
        dash.page.keyboard.press("c")
        dash.wait("document.getElementById('chart').data[0].type === 'scatter'")
        assert "mode=line" in dash.page.evaluate("location.search")
        assert {t["name"] for t in _traces(dash)} >= {"buy volume", "sell volume"}
        assert dash.errors == []
    finally:
        dash.close()


def test_two_symbols_two_charts_each_with_its_own_sma(browser: Browser, server: ServerProcess,
                                                      artifacts: Path) -> None:
    dash = Dashboard(browser, server.url + "/?log=demo")
    try:
        page = dash.page
        assert page.locator("#symbols input[type=checkbox]:checked").evaluate_all(
            "boxes => boxes.map(b => b.value)") == ["BTC-USD", "ETH-USD"]
        dash.play("50")
        cards = page.locator(".chart-card")
        assert cards.evaluate_all("cs => cs.map(c => c.dataset.symbol)") == ["BTC-USD", "ETH-USD"]
        dash.wait("document.getElementById('chart').data[0].x.length > 30"
                  " && document.getElementById('chart-1').data[0].x.length > 30")
        page.keyboard.press("Space")  # pause: the charts hold still while they are read
        dash.wait("__ticktape.status === 'paused'")
        page.wait_for_timeout(300)  # the frame that draws the last batch
        for chart, window in (("chart", 5), ("chart-1", 5)):
            price, sma = _traces(dash, chart)[:2]
            # The SMA is this chart's symbol's: the mean of its own last `window` prices.
            assert sma["y"][-1] == pytest.approx(np.mean(price["y"][-window:]), rel=1e-9)
        btc, eth = (_traces(dash, c)[0]["y"] for c in ("chart", "chart-1"))
        assert set(btc).isdisjoint(eth)
        # Fidelity readouts: lateness and effective speed were measured while playing.
        assert page.inner_text("#r-late") != "–"
        page.screenshot(path=str(artifacts / "dashboard-two-symbols.png"), full_page=True)

        # Drop ETH: one chart, a filtered stream from where it was, the URL says so.
        page.click("label.chip:has(input[value=ETH-USD])")
        dash.wait("document.querySelectorAll('.chart-card').length === 1")
        assert "symbols=BTC-USD" in page.evaluate("location.search")
        page.fill("#sma", "20")
        page.press("#sma", "Enter")
        page.locator("#sma").blur()
        page.click("#play")  # resume
        dash.wait("__ticktape.playing && document.getElementById('chart').data[0].x.length > 40")
        page.keyboard.press("Space")
        dash.wait("__ticktape.status === 'paused'")
        page.wait_for_timeout(300)
        price, sma = _traces(dash)[:2]
        assert sma["name"] == "SMA 20" and "sma=20" in page.evaluate("location.search")
        assert sma["y"][-1] == pytest.approx(np.mean(price["y"][-20:]), rel=1e-9)
        assert dash.errors == []
    finally:
        dash.close()


def test_a_click_in_the_overview_seeks_there(browser: Browser, server: ServerProcess,
                                             artifacts: Path) -> None:
    dash = Dashboard(browser, server.url + "/?log=demo")
    try:
        page = dash.page
        dash.wait("document.getElementById('overview').data?.length === 2")
        dash.play("10")
        info = page.evaluate("__ticktape.info")
        first, last = info["first_ts_ns"], info["last_ts_ns"]
        box = page.locator("#overview").bounding_box()
        assert box is not None
        margin = page.evaluate("document.getElementById('overview').layout.margin")
        fraction = 0.7
        x = box["x"] + margin["l"] + fraction * (box["width"] - margin["l"] - margin["r"])
        seq_before = dash.state()["lastSeq"]
        page.mouse.click(x, box["y"] + box["height"] / 2)
        clock = page.wait_for_function(
            f"__ticktape.seekAck !== null && __ticktape.seekSeq === null"
            f" && __ticktape.lastSeq > {seq_before + 20_000} && __ticktape.clockTs",
            timeout=20_000).json_value()
        target = first + fraction * (last - first)
        assert abs(clock - target) < 0.02 * (last - first)
        assert dash.state()["gaps"] == 0
        # The overview's cursor follows the replay clock.
        dash.wait(f"Math.abs(document.getElementById('overview').layout.shapes[0].x0 - {target / 1e6})"
                  f" < {0.03 * (last - first) / 1e6}")
        page.screenshot(path=str(artifacts / "dashboard-overview-seek.png"))
        assert dash.errors == []
    finally:
        dash.close()


def test_keyboard_space_arrows_plus_and_minus(browser: Browser, server: ServerProcess) -> None:
    dash = Dashboard(browser, server.url + "/?log=demo")
    try:
        page = dash.page
        dash.play("10")
        page.keyboard.press("+")
        dash.wait("__ticktape.statusSpeed === 50")
        assert page.input_value("#speed") == "50" and "speed=50" in page.evaluate("location.search")
        page.keyboard.press("-")
        page.keyboard.press("-")
        dash.wait("__ticktape.statusSpeed === 5")
        assert page.input_value("#speed") == "5"

        page.keyboard.press("Space")
        dash.wait("__ticktape.status === 'paused' && !__ticktape.playing")
        assert page.inner_text("#r-state") == "paused"
        time.sleep(0.3)
        before = dash.state()["received"]
        time.sleep(1.0)
        assert dash.state()["received"] == before  # paused: no ticks

        info = page.evaluate("__ticktape.info")
        span = info["last_ts_ns"] - info["first_ts_ns"]
        clock = dash.state()["clockTs"]
        page.keyboard.press("Shift+ArrowRight")  # +10 % of the log's span, while paused
        dash.wait("__ticktape.seekAck !== null")
        page.keyboard.press("Space")  # resume from there
        after = page.wait_for_function(
            "__ticktape.playing && __ticktape.seekSeq === null && __ticktape.firstAfterSeek !== null"
            " && __ticktape.clockTs", timeout=20_000).json_value()
        assert abs(after - (clock + 0.1 * span)) < 0.01 * span
        page.keyboard.press("ArrowLeft")  # -1 %
        dash.wait(f"__ticktape.seekAck !== null && __ticktape.seekSeq === null"
                  f" && __ticktape.clockTs < {after}")
        assert dash.state()["gaps"] == 0
        assert dash.errors == []
    finally:
        dash.close()


def test_the_view_round_trips_through_the_url(browser: Browser, server: ServerProcess,
                                              artifacts: Path) -> None:
    query = "?log=demo&speed=50&symbols=ETH-USD&interval=5s&mode=candles&sma=20"
    dash = Dashboard(browser, server.url + "/" + query)
    try:
        page = dash.page
        controls = ("[document.getElementById('speed').value, document.getElementById('interval').value,"
                    " document.getElementById('sma').value, document.getElementById('mode-candles').checked,"
                    " [...document.querySelectorAll('#symbols input:checked')].map(b => b.value),"
                    " [...document.querySelectorAll('.chart-card')].map(c => c.dataset.symbol)]")
        expected = ["50", "5s", "20", True, ["ETH-USD"], ["ETH-USD"]]
        assert page.evaluate(controls) == expected
        assert page.evaluate("location.search") == query
        page.click("#play")
        dash.wait("(document.getElementById('chart').data.find(t => t.type === 'candlestick')"
                  "?.x.length || 0) > 2")
        names = [t["name"] for t in _traces(dash)]
        assert "SMA 20" in names
        page.screenshot(path=str(artifacts / "dashboard-url-state.png"))
        # A change is written back; the link reopens the same view.
        page.select_option("#interval", "1m")
        page.click("label:has(#mode-line)")
        link = page.evaluate("location.href")
        assert "interval=1m" in link and "mode=line" in link
        again = Dashboard(browser, link)
        try:
            assert again.page.evaluate(controls) == ["50", "1m", "20", False, ["ETH-USD"], ["ETH-USD"]]
            assert again.errors == []
        finally:
            again.close()
        assert dash.errors == []
    finally:
        dash.close()


def test_phone_layout_with_candles_and_two_charts(browser: Browser, server: ServerProcess,
                                                  artifacts: Path) -> None:
    dash = Dashboard(browser, server.url + "/?log=demo&mode=candles",
                     viewport={"width": 390, "height": 844})
    try:
        dash.play("100")
        dash.wait("document.querySelectorAll('.chart-card .boxlayer .trace path').length > 10")
        width, inner = dash.page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width <= inner
        # Touch-sized controls: the play button, the mode switch and the symbol chips.
        for selector in ("#play", "label:has(#mode-line)", "label.chip"):
            box = dash.page.locator(selector).first.bounding_box()
            assert box is not None and box["height"] >= 40, selector
        dash.page.screenshot(path=str(artifacts / "dashboard-phone-candles.png"), full_page=True)
        assert dash.errors == []
    finally:
        dash.close()


# -- alerts: needs the server's `alert` event ----------------------------------------------------
async def _subscribe_with_alerts(url: str) -> dict[str, Any]:
    client = Client()
    await client.connect(url)
    try:
        return dict(await client.call("subscribe", {"log": "spike", "speed": "max", "alerts": True}))
    finally:
        await client.sio.disconnect()


def _require_server_alerts(url: str) -> None:
    """Runs once the server accepts `"alerts": true`. Until then: a skip while the alert engine
    does not exist, and a failure once it does (the feature is expected, not optional)."""
    # Playwright's sync API holds this thread's event loop: the probe runs on a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        ack = pool.submit(asyncio.run, _subscribe_with_alerts(url)).result(timeout=60)
    if ack["ok"]:
        return
    error = ack["error"]
    assert error["code"] == "bad_request" and "alerts" in error["message"], ack
    if importlib.util.find_spec("analysis.alerts") is None:
        pytest.skip("the server has no alerts yet (no analysis.alerts)")
    pytest.fail("ALERTS NOT SERVED: analysis/alerts exists but `subscribe` refuses \"alerts\": true "
                f"({error['message']}); the dashboard's alert panel needs the server's `alert` event "
                "(replayer/stream.py, replayer/protocol.py; docs/protocol.md)")


def test_alerts_marker_list_and_click_to_seek(browser: Browser, server: ServerProcess, data: Path,
                                              artifacts: Path) -> None:
    """ALERTS (needs the server side): a crafted jump raises an alert; the page marks it on the
    price chart, lists it, and a click on the row seeks the stream to its seq."""
    _require_server_alerts(server.url)
    expected = list(evaluate_log(load_rules(None), Log(data / "spike")))
    assert any(a.seq == SPIKE_AT and a.rule == "price_move" for a in expected), expected
    alert = next(a for a in expected if a.seq >= SPIKE_AT)
    dash = Dashboard(browser, server.url + "/?log=spike")
    try:
        page = dash.page
        dash.play("100")
        row = f"#alerts button[data-seq='{alert.seq}'][data-rule='{alert.rule}']"
        page.wait_for_selector(row, timeout=20_000)
        assert not page.locator("#alerts-panel").is_hidden()
        text = page.inner_text(row)
        assert alert.rule in text and alert.symbol in text and alert.message in text
        # The marker sits at the alert's time and the price of its tick.
        price_at = dict(zip(*_spike_prices(data / "spike"), strict=True))
        dash.wait(f"__ticktape.lastSeq > {alert.seq + 300}")
        page.keyboard.press("Space")
        dash.wait("__ticktape.status === 'paused'")
        page.wait_for_timeout(300)
        marks = next(t for t in _traces(dash) if t["name"] == "alerts")
        assert alert.ts / 1e6 in marks["x"]
        assert marks["y"][marks["x"].index(alert.ts / 1e6)] == price_at[alert.seq]
        assert any(alert.rule in text for text in marks["text"])
        # Newest first.
        seqs = page.locator("#alerts button").evaluate_all("bs => bs.map(b => Number(b.dataset.seq))")
        assert seqs == sorted(seqs, reverse=True)
        assert len(seqs) == len([a for a in expected if a.seq <= dash.state()["lastSeq"]])
        page.screenshot(path=str(artifacts / "dashboard-alerts.png"))
        page.click(row)
        dash.wait(f"__ticktape.seekAck === {alert.seq}")
        page.keyboard.press("Space")
        dash.wait(f"__ticktape.firstAfterSeek === {alert.seq}")
        assert dash.state()["gaps"] == 0
        # Replaying past it again gives it its marker back, not a second row.
        dash.wait(f"__ticktape.lastSeq > {alert.seq + 10}")
        assert page.locator(row).count() == 1
        assert dash.errors == []
    finally:
        dash.close()


def _spike_prices(path: Path) -> tuple[list[int], list[float]]:
    table = pa.Table.from_batches(list(Log(path).iter_batches()))
    return table.column("seq").to_pylist(), table.column("price").to_pylist()
