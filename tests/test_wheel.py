"""The wheel, installed into a fresh venv away from the checkout: it records, serves, and the
dashboard loads every asset from the package (no npm, no node_modules, no ./dev)."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Response, sync_playwright

from tests.conftest import CHROMIUM_ARGS, ROOT, chromium_path

PACKAGES = ("recorder", "replayer", "analysis", "ticktape")


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 120) -> str:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}{result.stderr}"
    return result.stdout


def _project_files() -> list[str]:
    """What a clean clone holds once the tree is committed: tracked and new files, not the
    git-ignored ones (a git-ignored asset is exactly what a wheel built in CI would miss)."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


@dataclass
class Installed:
    venv: Path
    wheel: Path
    env: dict[str, str]
    cwd: Path

    @property
    def ticktape(self) -> Path:
        return self.venv / "bin" / "ticktape"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, venv, cwd = tmp / "src", tmp / "dist", tmp / "venv", tmp / "run"
    # Build from a copy: no build/ or egg-info churn in the checkout a colleague is using.
    for name in _project_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", dist, src, cwd=tmp)
    (wheel,) = dist.glob("ticktape-*.whl")
    # A fresh venv without pip (faster); this pip installs into it.
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
         "-q", wheel, cwd=tmp)
    # Dependencies: this venv's site-packages, appended to the new venv's path by a .pth. Only
    # after the install, so pip never sees (or touches) the editable ticktape in there. Its
    # own .pth files (the editable finder among them) are not run from an appended path.
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                     cwd=tmp).strip())
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "ticktape-test-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    return Installed(venv=venv, wheel=wheel, env=env, cwd=cwd)


def test_wheel_ships_every_package_module_and_static_asset(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        shipped = set(whl.namelist())
    wanted = [f for f in _project_files()
              if f.startswith(tuple(f"{p}/" for p in PACKAGES))
              and (f.endswith(".py") or f.startswith("replayer/static/"))]
    assert any(f.startswith("replayer/static/vendor/") for f in wanted)
    assert [f for f in wanted if f not in shipped] == []


def test_installed_modules_come_from_the_venv_not_the_checkout(installed: Installed) -> None:
    out = _run(installed.python, "-c",
               "import json, sys\n"
               f"mods = [__import__(m) for m in {PACKAGES!r}]\n"
               "print(json.dumps([m.__file__ for m in mods]))",
               cwd=installed.cwd, env=installed.env)
    venv = installed.venv.resolve()
    for path in json.loads(out):
        assert Path(path).resolve().is_relative_to(venv), path


class _Server:
    """The installed `ticktape replay` on 127.0.0.1:0; its output is read by a thread so a
    silent hang fails at the deadline instead of blocking on readline."""

    def __init__(self, installed: Installed, data: Path) -> None:
        self.proc = subprocess.Popen(
            [str(installed.ticktape), "replay", str(data), "--host", "127.0.0.1", "--port", "0"],
            cwd=installed.cwd, env=installed.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"server printed no URL in 30 s: {self.text}") from None
            if " at http://" in line:
                break
            if not line:
                self.stop()
                raise AssertionError(f"server exited: {self.text}")
        self.url = line.split(" at ")[1].split()[0].rstrip("/")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put("")

    @property
    def text(self) -> str:
        return "".join(self.output)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self._pumping.join(timeout=20)  # reads to EOF, then the pipe can close
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        return code


@pytest.fixture
def server(installed: Installed) -> Iterator[_Server]:
    data = installed.cwd / "data"
    _run(installed.ticktape, "record", data / "wheel-btc", "--ticks", "3000", "--rate", "50",
         "--seed", "3", cwd=installed.cwd, env=installed.env)
    srv = _Server(installed, data)
    try:
        yield srv
    finally:
        code = srv.stop()
    assert code == 0, srv.text


def test_installed_dashboard_loads_every_asset_and_draws(installed: Installed,
                                                         server: _Server) -> None:
    failed: list[str] = []
    errors: list[str] = []

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("response", on_response)
            page.on("requestfailed", lambda r: failed.append(f"{r.failure} {r.url}"))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")  # returns once the page and its scripts have loaded
            assert (failed, errors) == ([], [])
            assert page.evaluate("[typeof io, typeof Plotly]") == ["function", "object"]
            page.wait_for_function("window.__ticktape && __ticktape.connected && __ticktape.info",
                                   timeout=20_000)
            page.select_option("#speed", "max")
            page.click("#play")
            # Points in the chart's data, and a line Plotly actually drew through them.
            page.wait_for_function(
                "__ticktape.points > 0 && document.getElementById('chart').data[0].x.length > 0"
                " && (document.querySelector('#chart .scatterlayer .trace path.js-line')"
                "     ?.getAttribute('d') || '').length > 1", timeout=20_000)
        finally:
            browser.close()
    assert failed == [], failed
    assert errors == [], errors

    # What the server sent is the packaged bundle its manifest describes.
    static = Path(_run(installed.python, "-c", "import replayer.app; print(replayer.app.STATIC)",
                       cwd=installed.cwd, env=installed.env).strip())
    manifest = json.loads((static / "vendor" / "MANIFEST.json").read_text())
    with urllib.request.urlopen(f"{server.url}/static/vendor/socket.io.min.js", timeout=20) as r:
        assert hashlib.sha256(r.read()).hexdigest() == manifest["socket.io.min.js"]["sha256"]
