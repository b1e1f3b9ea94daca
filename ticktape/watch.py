"""`ticktape watch`: print a replay, and optionally record it as a log, on ticktape.client."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from recorder.errors import ConfigError, TicktapeError
from recorder.log import LogWriter, iso_ns, make_batch
from ticktape.client import Batch, Client, connect

__all__ = ["WatchConfig", "WatchError", "watch"]

FLUSH_INTERVAL = 1.0  # seconds between durable journal flushes of --record, as `record`'s default


class WatchError(TicktapeError):
    """Recording what arrived failed."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class WatchConfig:
    url: str
    log: str
    speed: float | str = 1.0
    from_seq: int = 0
    symbols: tuple[str, ...] | None = None
    sma: int = 5
    encoding: str = "json"
    record: Path | None = None
    overwrite: bool = False
    json_lines: bool = False
    quiet: bool = False
    token: str | None = None
    connect_timeout: float = 10.0
    reconnect_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"URL {self.url!r} must start with http:// or https://")
        if self.record is not None and (self.from_seq or self.symbols):
            raise ConfigError("--record needs the whole log: drop --from-seq and --symbols")
        if self.encoding not in ("json", "arrow"):
            raise ConfigError(f"--encoding must be json or arrow, got {self.encoding!r}")
        if not self.reconnect_timeout > 0:
            raise ConfigError(f"--reconnect-timeout must be > 0, got {self.reconnect_timeout}")


class _Recorder:
    """A LogWriter that turns every failure into a WatchError naming OUT."""

    def __init__(self, path: Path, info: dict[str, Any], url: str, overwrite: bool) -> None:
        meta = {**info.get("ticktape", {}), "source": f"watch:{url}", "origin": info["name"]}
        meta.pop("format", None)
        self.path = path
        self.writer = LogWriter(path, meta, overwrite=overwrite)  # refuses an existing OUT
        self.flushed = 0.0

    def append(self, batch: Batch) -> None:
        try:
            self.writer.append(make_batch(batch.seq, batch.ts, pa.array(batch.symbol),
                                          batch.price, batch.size, pa.array(batch.side)))
            if time.monotonic() - self.flushed >= FLUSH_INTERVAL:
                self.writer.flush()
                self.flushed = time.monotonic()
        except (OSError, ValueError) as exc:
            raise WatchError(f"cannot record into {self.path}: {exc}") from exc

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError as exc:
            raise WatchError(f"cannot record into {self.path}: {exc}") from exc


def _lines(batch: Batch, json_lines: bool) -> str:
    lines = []
    for i, seq in enumerate(batch.seq.tolist()):
        ts, sma = iso_ns(int(batch.ts[i])), float(batch.sma[i])
        price, size = float(batch.price[i]), float(batch.size[i])
        if json_lines:
            lines.append(json.dumps({"seq": seq, "ts": ts, "symbol": batch.symbol[i],
                                     "price": price, "size": size, "side": batch.side[i],
                                     "sma": None if math.isnan(sma) else sma}))
        else:
            sma_text = "-" if math.isnan(sma) else f"{sma:.4f}"
            lines.append(f"{seq:>10} {ts} {batch.symbol[i]:<9} {batch.side[i]:<4} "
                         f"{size:>12.6f} @ {price:>12.4f}  sma {sma_text}")
    return "\n".join(lines) + "\n"


async def _open_recorder(client: Client, config: WatchConfig) -> _Recorder | None:
    """Check the log and claim OUT before subscribing: a refusal costs no stream."""
    if config.record is None:
        return None
    info = await client.log(config.log)
    return _Recorder(config.record, info, config.url, config.overwrite)


async def watch(config: WatchConfig, out: TextIO = sys.stdout) -> int:
    """Print (and record) the replay until `end`; returns the number of events received."""
    received = 0
    async with connect(config.url, config.token, reconnect_timeout=config.reconnect_timeout,
                       connect_timeout=config.connect_timeout) as client:
        recorder = await _open_recorder(client, config)
        try:
            async for batch in client.subscribe(
                    config.log, speed=config.speed, from_seq=config.from_seq,
                    symbols=list(config.symbols) if config.symbols else None, sma=config.sma,
                    encoding="arrow" if config.encoding == "arrow" else "json"):
                if recorder is not None:
                    recorder.append(batch)
                if not config.quiet:
                    out.write(_lines(batch, config.json_lines))
                    out.flush()
                received += len(batch)
        except BaseException:
            if recorder is not None:  # keep what arrived as a valid (partial) log
                with contextlib.suppress(Exception):
                    recorder.close()
            raise
        if recorder is not None:
            recorder.close()
    return received
