"""The committed browser bundle (replayer/static/vendor/) is the one package-lock.json pins."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.conftest import ROOT

VENDOR = ROOT / "replayer" / "static" / "vendor"
BUNDLE = "socket.io.min.js"
UPDATE = ("copy node_modules/socket.io-client/dist/socket.io.min.js (after npm ci) into "
          "replayer/static/vendor/ and set version and sha256 in its MANIFEST.json")


def _entry() -> dict[str, Any]:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    return dict(manifest[BUNDLE])


def _locked_version(package: str) -> str:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    return str(lock["packages"][f"node_modules/{package}"]["version"])


def test_manifest_names_the_locked_version() -> None:
    entry = _entry()
    assert entry["package"] == "socket.io-client"
    assert entry["version"] == _locked_version(entry["package"]), UPDATE
    # The bundle's own banner states its version too: the manifest cannot drift from the file.
    banner = (VENDOR / BUNDLE).read_text(encoding="utf-8")[:200]
    assert f"Socket.IO v{entry['version']}\n" in banner, UPDATE


def test_manifest_hash_matches_the_file() -> None:
    entry = _entry()
    assert hashlib.sha256((VENDOR / BUNDLE).read_bytes()).hexdigest() == entry["sha256"], UPDATE


def test_license_ships_beside_the_bundle() -> None:
    entry = _entry()
    text = (VENDOR / entry["license_file"]).read_text()
    assert entry["license"] == "MIT" and text.startswith("The MIT License")
    assert "Guillermo Rauch" in text


def test_bundle_is_byte_identical_to_the_installed_npm_package() -> None:
    installed = ROOT / "node_modules" / "socket.io-client"
    if not installed.is_dir():  # ./dev (and so CI) always installs it
        pytest.skip("node_modules/socket.io-client is not installed: run ./dev test")
    version = json.loads((installed / "package.json").read_text())["version"]
    assert version == _entry()["version"], "node_modules is stale: run npm ci"
    npm = installed / "dist" / BUNDLE
    assert npm.read_bytes() == (VENDOR / BUNDLE).read_bytes(), UPDATE
    assert (installed / "LICENSE").read_bytes() == (VENDOR / _entry()["license_file"]).read_bytes()

