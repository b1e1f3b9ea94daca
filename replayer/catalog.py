"""The logs a server serves, by name (`replay PATH`, docs/operations.md); nothing else is opened.

PATH is served alone if it is a `.parquet` log file, or a directory holding ticktape segments
(`seg-*.parquet`) or a journal directly. Any other directory is a folder of logs: every
subdirectory that is a log and every `.parquet` file that is a log on its own (named by its
stem) directly under it, rescanned as logs appear. Anything else is a usage error.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from recorder.errors import LogNotFoundError, NotALogError, TicktapeError
from recorder.log import Log, is_log_dir_listing
from replayer.errors import UnknownLog, scrub_paths, shown
from replayer.protocol import valid_log_name

__all__ = ["RESCAN_EVERY", "Catalog"]

logger = logging.getLogger(__name__)
RESCAN_EVERY = 1.0  # seconds: a folder of logs is listed again at most this often


class Catalog:
    """Names to logs. A damaged log of a folder is listed with its problem, not fatal."""

    def __init__(self, root: Path, *, rescan_every: float = RESCAN_EVERY) -> None:
        self.root = root
        self.rescan_every = rescan_every
        self._logs: dict[str, Log] = {}
        self._problems: dict[str, str] = {}
        self._scanned = 0.0
        self._single: Log | None = self._open_single(root)
        self.scan()

    @staticmethod
    def _open_single(root: Path) -> Log | None:
        """The log PATH names, None for a folder of logs, or the usage error it is."""
        if not root.exists():
            raise LogNotFoundError(f"no such file or directory: {root}")
        if root.is_dir():
            try:
                names = os.listdir(root)
            except OSError as exc:
                raise NotALogError(f"{root} cannot be read: {exc.strerror}") from exc
            return Log(root) if is_log_dir_listing(names) else None
        if root.suffix != ".parquet":
            raise NotALogError(f"{root} is neither a log nor a folder of logs (expected a "
                               ".parquet log file or a directory)")
        return Log(root)  # NotALogError for a Parquet file without ticktape metadata

    @property
    def single(self) -> bool:
        return self._single is not None

    def scan(self) -> None:
        """List the folder again; logs already open are kept (with their caches)."""
        self._scanned = time.monotonic()
        if self._single is not None:
            self._logs = {self._single.name: self._single}
            return
        found: dict[str, Log] = {}
        problems: dict[str, str] = {}
        try:
            entries = sorted(self.root.iterdir())
        except OSError as exc:  # the folder vanished or became unreadable: serve nothing
            logger.warning("cannot list %s: %s", self.root, exc)
            entries = []
        for path in entries:
            single_file = path.suffix == ".parquet" and path.is_file()
            if path.name.startswith((".", "_")) or not (single_file or path.is_dir()):
                continue
            name = path.stem if single_file else path.name
            if not valid_log_name(name):
                continue
            if name in found or name in problems:
                logger.warning("%s: a log named %r is served already; skipped", path, name)
                continue
            known = self._logs.get(name)
            if known is not None and known.path == path:
                found[name] = known
                continue
            try:
                found[name] = Log(path)
            except NotALogError:
                continue  # foreign files and folders are simply not served
            except TicktapeError as exc:  # a log, but damaged or unrecovered: say so
                problems[name] = self.public(str(exc))
        self._logs, self._problems = found, problems

    def _fresh(self) -> None:
        if self._single is None and time.monotonic() - self._scanned >= self.rescan_every:
            self.scan()

    def public(self, text: str) -> str:
        """`text` with every server path replaced by log names (for clients)."""
        return scrub_paths(text, [(lg.path, lg.name) for lg in self._logs.values()],
                           root=None if self._single is not None else self.root)

    def get(self, name: Any) -> Log:
        """The log called `name`, or UnknownLog; a path-like name never touches the disk."""
        if not valid_log_name(name):
            raise UnknownLog(f"unknown log {shown(name)}")
        found = self._logs.get(name)
        if found is None:
            self._fresh()
            found = self._logs.get(name)
        if found is None:
            if name in self._problems:
                raise UnknownLog(f"log {name!r} is unavailable: {self._problems[name]}")
            raise UnknownLog(f"unknown log {name!r}")
        return found

    def infos(self) -> list[dict[str, Any]]:
        """Every log's info, and every damaged log's problem (file I/O: a worker thread)."""
        self._fresh()
        out = []
        for name, lg in sorted(self._logs.items()):
            try:
                lg.refresh()
                out.append(lg.info().to_json() | {"path": None})
            except TicktapeError as exc:
                out.append({"name": name, "error": self.public(str(exc))})
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
