"""Server configuration: one frozen dataclass built by the CLI and passed down."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from recorder.errors import ConfigError

__all__ = ["ServerConfig"]


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    path: Path  # a log, or a directory of logs
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None  # required from clients when set
    cors_origins: tuple[str, ...] = ()  # extra allowed browser origins ("*" for any)
    window: int = 4  # batches in flight per client before its stream waits
    max_batch: int = 5_000  # ticks per JSON batch at most
    max_batch_arrow: int = 65_536  # binary batches cost no parsing: larger, fewer
    read_rows: int = 65_536  # rows read from the log at a time
    follow_poll: float = 0.05  # seconds between checks for new events of a live log
    recent_ticks: int = 1_000  # broadcast: what a late joiner receives at once

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ConfigError(f"--port must be within [0, 65535], got {self.port}")
        if not 1 <= self.window <= 1_000:
            raise ConfigError(f"--window must be within [1, 1000], got {self.window}")
        if not 1 <= self.max_batch <= 1_000_000:
            raise ConfigError(f"--max-batch must be within [1, 1000000], got {self.max_batch}")
        if self.read_rows < 1:
            raise ConfigError("read rows must be >= 1")
        if not (math.isfinite(self.follow_poll) and 0.001 <= self.follow_poll <= 10):
            raise ConfigError("follow poll must be within [0.001, 10] s")
        if self.token is not None and not self.token:
            raise ConfigError("--token must not be empty")
