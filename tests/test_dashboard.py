"""The dashboard in real headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import free_port, make_log, run_cli
from tests.replay_helpers import ServerProcess


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dash")
    make_log(d / "demo-btc", ticks=60_000, symbols="BTC-USD,ETH-USD", rate=20)
    return d


@pytest.fixture(scope="module")
def server(data: Path) -> Iterator[ServerProcess]:
    with ServerProcess(data) as proc:
        yield proc


class Dashboard:
    """A page plus everything it logged, so a test can assert there were no errors."""

    def __init__(self, browser: Browser, url: str, viewport: dict[str, int] | None = None) -> None:
        self.page: Page = browser.new_page(viewport=viewport or {"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.wait("window.__ticktape && window.__ticktape.connected && window.__ticktape.info")

    def wait(self, expression: str, timeout: float = 20_000) -> None:
        self.page.wait_for_function(expression, timeout=timeout)

    def state(self) -> dict[str, Any]:
        return dict(self.page.evaluate(
            "({received: __ticktape.received, points: __ticktape.points, gaps: __ticktape.gaps,"
            " lastSeq: __ticktape.lastSeq, playing: __ticktape.playing, status: __ticktape.status,"
            " clockTs: __ticktape.clockTs, connected: __ticktape.connected,"
            " reconnects: __ticktape.reconnects})"))

    def play(self, speed: str) -> None:
        self.page.select_option("#speed", speed)
        self.page.click("#play")
        self.wait("__ticktape.received > 0")

    def close(self) -> None:
        self.page.close()


def test_page_loads_connects_and_draws(browser: Browser, server: ServerProcess,
                                       artifacts: Path) -> None:
    dash = Dashboard(browser, server.url + "/")
    try:
        page = dash.page
        assert page.locator("#log option").all_inner_texts() == ["demo-btc (60,000 ticks)"]
        assert page.locator("#symbols label.chip").all_inner_texts() == ["BTC-USD", "ETH-USD"]
        assert page.locator("#symbols input:checked").count() == 2  # every symbol, one chart each
        dash.play("100")
        dash.wait("__ticktape.points > 100")
        # The ticks/s readout counts the last second's arrivals, refreshed every 250 ms.
        dash.wait("Number(document.getElementById('r-rate').textContent.replace(/,/g, '')) > 0")
        for readout in ("#r-price", "#r-sma", "#r-clock", "#r-seq"):
            assert page.inner_text(readout) not in ("", "–"), readout
        assert page.inner_text("#conn") == "connected"
        assert page.inner_text("#r-state") == "playing"
        state = dash.state()
        assert state["gaps"] == 0 and state["lastSeq"] == state["received"] - 1
        # The chart keeps a bounded window however long it runs.
        points = page.evaluate("document.getElementById('chart').data[0].x.length")
        assert 0 < points <= 3000
        page.screenshot(path=str(artifacts / "dashboard.png"))
        assert dash.errors == []
    finally:
        dash.close()


def test_pause_stops_the_tick_counter_and_resume_continues(browser: Browser,
                                                           server: ServerProcess) -> None:
    dash = Dashboard(browser, server.url + "/")
    try:
        dash.play("50")
        dash.wait("__ticktape.received > 50")
        dash.page.click("#play")  # pause
        dash.wait("__ticktape.status === 'paused'")
        time.sleep(0.3)
        before = dash.state()["received"]
        time.sleep(1.0)
        assert dash.state()["received"] == before
        assert dash.page.inner_text("#play").endswith("Play")
        dash.page.keyboard.press("Space")  # keyboard resumes, as the button says
        dash.wait(f"__ticktape.received > {before + 20}")
        state = dash.state()
        assert state["gaps"] == 0 and state["lastSeq"] == state["received"] - 1
        assert dash.errors == []
    finally:
        dash.close()


def test_seek_moves_the_replay_clock(browser: Browser, server: ServerProcess) -> None:
    dash = Dashboard(browser, server.url + "/")
    try:
        dash.play("10")
        info = dash.page.evaluate("__ticktape.info")
        first, last = info["first_ts_ns"], info["last_ts_ns"]
        seq_before = dash.state()["lastSeq"]
        # Drag the slider to 70 % with the keyboard: Home, then PageUp x7 (10 % each).
        dash.page.focus("#seek")
        dash.page.keyboard.press("Home")
        for _ in range(7):
            dash.page.keyboard.press("PageUp")
        fraction = int(dash.page.input_value("#seek")) / 1000
        assert fraction >= 0.5
        target = first + fraction * (last - first)
        # The replay clock keeps moving after the seek: read it the moment the first ticks
        # from the new position are in, not after another round trip.
        clock = dash.page.wait_for_function(
            f"__ticktape.lastSeq > {seq_before + 25000} && __ticktape.seekSeq === null"
            " && __ticktape.clockTs", timeout=20_000).json_value()
        state = dash.state()
        assert abs(clock - target) < 0.02 * (last - first)
        assert state["gaps"] == 0  # a seek is a jump, not a gap
        assert dash.errors == []
    finally:
        dash.close()


def test_server_restart_mid_stream_page_resumes_without_gap(browser: Browser, data: Path,
                                                             artifacts: Path) -> None:
    port = free_port()
    server = ServerProcess(data, port=port)
    dash = Dashboard(browser, server.url + "/")
    try:
        dash.play("1000")
        dash.wait("__ticktape.received > 500")
        server.kill()
        dash.wait("!__ticktape.connected")
        assert dash.page.inner_text("#conn") == "reconnecting…"
        before = dash.state()["received"]
        server = ServerProcess(data, port=port)
        dash.wait(f"__ticktape.connected && __ticktape.received > {before + 500}", 40_000)
        state = dash.state()
        assert state["reconnects"] >= 1
        assert state["gaps"] == 0 and state["lastSeq"] == state["received"] - 1
        dash.page.screenshot(path=str(artifacts / "dashboard-after-restart.png"))
        # The browser logs the refused reconnect attempts; nothing else may fail.
        assert [e for e in dash.errors if "ERR_CONNECTION_REFUSED" not in e] == []
    finally:
        dash.close()
        server.stop()


def test_phone_layout_has_no_horizontal_scroll(browser: Browser, server: ServerProcess,
                                               artifacts: Path) -> None:
    dash = Dashboard(browser, server.url + "/", viewport={"width": 390, "height": 844})
    try:
        dash.play("100")
        dash.wait("__ticktape.points > 50")
        width, inner = dash.page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width <= inner
        dash.page.screenshot(path=str(artifacts / "dashboard-phone.png"), full_page=True)
        assert dash.errors == []
    finally:
        dash.close()


def test_report_opens_offline_and_fetches_nothing(browser: Browser, data: Path,
                                                  tmp_path: Path, artifacts: Path) -> None:
    out = tmp_path / "report.html"
    assert run_cli("report", str(data / "demo-btc"), "-o", str(out)).returncode == 0
    page = browser.new_page(viewport={"width": 1280, "height": 1800})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 6")
        assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
        assert errors == []
        page.screenshot(path=str(artifacts / "report.png"))
    finally:
        page.close()


def test_demo_records_once_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    import json
    import signal
    import subprocess
    import sys
    import urllib.request

    def start() -> tuple[subprocess.Popen[str], str, str]:
        proc = subprocess.Popen([sys.executable, "-m", "ticktape", "demo", "--data",
                                 str(tmp_path / "data"), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if " at http://" in line or not line:
                break
        assert " at http://" in lines[-1], "".join(lines)
        return proc, "".join(lines), lines[-1].split(" at ")[1].split()[0].rstrip("/")

    proc, output, url = start()
    try:
        assert "recorded" in output and "demo-btc" in output
        with urllib.request.urlopen(f"{url}/api/logs") as resp:
            logs = json.load(resp)
        assert [lg["name"] for lg in logs] == ["demo-btc"]
        assert logs[0]["symbols"] == ["BTC-USD", "ETH-USD"] and logs[0]["ticktape"]["seed"] == 42
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    proc, output, _ = start()  # second run: the log exists, nothing is re-recorded
    try:
        assert "using" in output and "recorded" not in output
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
