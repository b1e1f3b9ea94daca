"""The logs a server serves, by name. Names map to paths found by scanning; nothing else is opened."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from recorder.errors import LogNotFoundError, NotALogError, TicktapeError
from recorder.log import Log
from replayer.errors import UnknownLog
from replayer.protocol import valid_log_name

__all__ = ["Catalog"]

log = logging.getLogger(__name__)
RESCAN_EVERY = 1.0


class Catalog:
    """`replay PATH`: PATH if it is a log, else every log directly under it (rescanned lazily)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if not root.exists():
            raise LogNotFoundError(f"no such file or directory: {root}")
        self._logs: dict[str, Log] = {}
        self._problems: dict[str, str] = {}
        self._scanned = 0.0
        self.single = self._is_log(root)
        self.scan()

    @staticmethod
    def _is_log(path: Path) -> bool:
        try:
            Log(path)
        except TicktapeError:
            return False
        return True

    def scan(self) -> None:
        """Find logs; a damaged one is listed with its problem instead of failing the server."""
        self._scanned = time.monotonic()
        candidates = [self.root] if self.single else [
            p for p in sorted(self.root.iterdir())
            if not p.name.startswith((".", "_")) and (p.is_dir() or p.suffix == ".parquet")]
        found: dict[str, Log] = {}
        problems: dict[str, str] = {}
        for path in candidates:
            name = path.stem if path.suffix == ".parquet" else path.name
            if not valid_log_name(name) or name in found:
                continue
            try:
                found[name] = self._logs[name] if name in self._logs and \
                    self._logs[name].path == path else Log(path)
            except NotALogError:
                continue  # foreign files and folders are simply not served
            except TicktapeError as exc:
                problems[name] = str(exc)  # a log, but damaged or unrecovered: say so
        self._logs, self._problems = found, problems

    def get(self, name: Any) -> Log:
        """The log called `name`, or UnknownLog; a path-like name never touches the disk."""
        if not valid_log_name(name):
            raise UnknownLog(f"unknown log {name!r}")
        found = self._logs.get(name)
        if found is None and time.monotonic() - self._scanned > RESCAN_EVERY and not self.single:
            self.scan()
            found = self._logs.get(name)
        if found is None:
            if name in self._problems:
                raise UnknownLog(f"log {name!r} is unavailable: {self._problems[name]}")
            raise UnknownLog(f"unknown log {name!r}")
        return found

    def infos(self) -> list[dict[str, Any]]:
        if not self.single and time.monotonic() - self._scanned > RESCAN_EVERY:
            self.scan()
        out = []
        for _name, lg in sorted(self._logs.items()):
            with contextlib.suppress(TicktapeError):
                lg.refresh()
                out.append(lg.info().to_json() | {"path": None})
        for name, problem in sorted(self._problems.items()):
            out.append({"name": name, "error": problem})
        return out

    def info(self, name: Any) -> dict[str, Any]:
        lg = self.get(name)
        lg.refresh()
        return lg.info().to_json() | {"path": None}  # never reveal server paths

    @property
    def names(self) -> list[str]:
        return sorted(self._logs)
