"""`ticktape watch`: a command-line Socket.IO client that prints, and optionally records, a replay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import socketio

from recorder.errors import ConfigError, LogDamagedError, TicktapeError
from recorder.log import LogWriter, iso_ns, make_batch

__all__ = ["WatchConfig", "WatchError", "watch"]


class WatchError(TicktapeError):
    """The server refused or broke the stream."""


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

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"URL {self.url!r} must start with http:// or https://")
        if self.record is not None and (self.from_seq or self.symbols):
            raise ConfigError("--record needs the whole log: drop --from-seq and --symbols")


class _Watcher:
    def __init__(self, config: WatchConfig, out: TextIO) -> None:
        self.config, self.out = config, out
        self.next_seq = config.from_seq
        self.received = 0
        self.done = asyncio.Event()
        self.error: TicktapeError | None = None
        self.writer: LogWriter | None = None
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.2,
                                        reconnection_delay_max=2.0)
        self.sio.on("connect", self.on_connect)
        self.sio.on("ticks", self.on_ticks)
        self.sio.on("end", self.on_end)
        self.sio.on("status", self.on_status)

    def fail(self, error: TicktapeError) -> None:
        self.error = self.error or error
        self.done.set()

    async def on_connect(self) -> None:
        # Also runs after every automatic reconnect: resume right after the last seq seen.
        asyncio.get_running_loop().create_task(self.subscribe())

    async def subscribe(self) -> None:
        payload: dict[str, Any] = {"log": self.config.log, "speed": self.config.speed,
                                   "from_seq": self.next_seq, "sma": self.config.sma,
                                   "encoding": self.config.encoding}
        if self.config.symbols:
            payload["symbols"] = list(self.config.symbols)
        try:
            ack = await self.sio.call("subscribe", payload, timeout=30)
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
            return  # the connection dropped again; the next connect retries
        if not ack.get("ok"):
            self.fail(WatchError(f"server refused: {ack['error']['message']} "
                                 f"({ack['error']['code']})"))
            return
        if self.config.record is not None and self.writer is None:
            origin = ack["log"].get("ticktape", {})
            meta = {**origin, "source": f"watch:{self.config.url}", "origin": ack["log"]["name"]}
            meta.pop("format", None)
            self.writer = LogWriter(self.config.record, meta, overwrite=self.config.overwrite)

    def _batch(self, data: Any) -> tuple[pa.RecordBatch, np.ndarray]:
        if isinstance(data, bytes | bytearray):
            table = pa.ipc.open_stream(data).read_all().combine_chunks()
            batch = table.to_batches()[0]
            sma = batch.column("sma").to_numpy(zero_copy_only=False)
            return batch.select(range(6)), sma
        sma = np.array([math.nan if v is None else v for v in data["sma"]], dtype=float)
        batch = make_batch(np.array(data["seq"], np.int64), np.array(data["ts"], np.int64),
                           pa.array(data["symbol"]), np.array(data["price"], float),
                           np.array(data["size"], float), pa.array(data["side"]))
        return batch, sma

    async def on_ticks(self, data: Any) -> None:
        batch, sma = self._batch(data)
        first = int(batch.column(0)[0].as_py())
        if first != self.next_seq and not self.config.symbols:
            self.fail(LogDamagedError(f"stream jumped from seq {self.next_seq - 1} to {first}"))
            return
        self.next_seq = int(batch.column(0)[-1].as_py()) + 1
        self.received += batch.num_rows
        if self.writer is not None:
            self.writer.append(batch)
            self.writer.flush()
        if not self.config.quiet:
            self._print(batch, sma)

    def _print(self, batch: pa.RecordBatch, sma: np.ndarray) -> None:
        cols = batch.to_pydict()
        ts = batch.column(1).cast(pa.int64()).to_pylist()
        lines = []
        for i, seq in enumerate(cols["seq"]):
            s = None if math.isnan(sma[i]) else float(sma[i])
            if self.config.json_lines:
                lines.append(json.dumps({"seq": seq, "ts": iso_ns(ts[i]),
                                         "symbol": cols["symbol"][i], "price": cols["price"][i],
                                         "size": cols["size"][i], "side": cols["side"][i],
                                         "sma": s}))
            else:
                sma_text = "-" if s is None else f"{s:.4f}"
                lines.append(f"{seq:>10} {iso_ns(ts[i])} {cols['symbol'][i]:<9} "
                             f"{cols['side'][i]:<4} {cols['size'][i]:>12.6f} @ "
                             f"{cols['price'][i]:>12.4f}  sma {sma_text}")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    async def on_end(self, data: Any) -> None:
        self.done.set()

    async def on_status(self, data: Any) -> None:
        if data.get("reason") and data.get("state") == "ended" and data["reason"] != "shutdown":
            self.fail(WatchError(f"server ended the stream: {data['reason']}"))


async def watch(config: WatchConfig, out: TextIO = sys.stdout) -> int:
    """Run until the server sends `end`; returns the number of events received."""
    watcher = _Watcher(config, out)
    auth = {"token": config.token} if config.token else None
    try:
        await asyncio.wait_for(watcher.sio.connect(config.url, auth=auth,
                                                   transports=["websocket"]),
                               config.connect_timeout)
    except (TimeoutError, socketio.exceptions.ConnectionError, OSError) as exc:
        raise WatchError(f"cannot connect to {config.url}: {exc or 'timed out'}") from exc
    try:
        await watcher.done.wait()
    finally:
        with contextlib.suppress(Exception):
            await watcher.sio.disconnect()
        if watcher.writer is not None:
            watcher.writer.close()
    if watcher.error is not None:
        raise watcher.error
    return watcher.received
