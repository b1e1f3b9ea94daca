"""Server configuration: one frozen dataclass built by the CLI and passed down."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from analysis.alerts import AlertConfig
from recorder.errors import ConfigError

__all__ = ["REDIS_SCHEMES", "ServerConfig"]

REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://", "unix://")


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
    redis_url: str | None = None  # fleet mode (replayer/fleet.py): broadcasts shared through Redis
    reuse_port: bool = False  # SO_REUSEPORT: several workers listen on one port
    # Alerts (replayer/alerting.py, webhook.py): the rules subscribers may ask for, and where
    # every alert a stream raises is POSTed.
    alert_rules: AlertConfig = field(default_factory=AlertConfig)
    alert_webhooks: tuple[str, ...] = ()
    webhook_timeout: float = 5.0  # seconds per POST
    webhook_retries: int = 3  # after the first attempt
    webhook_backoff: float = 0.5  # seconds before the first retry, doubling
    webhook_queue: int = 1_000  # alerts waiting per URL; the oldest is dropped beyond

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
        for url in self.alert_webhooks:
            if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
                raise ConfigError(f"--alert-webhook must be an http:// or https:// URL, "
                                  f"got {url[:40]!r}")
        if not (math.isfinite(self.webhook_timeout) and 0.01 <= self.webhook_timeout <= 300):
            raise ConfigError(f"--alert-webhook-timeout must be within [0.01, 300] s, "
                              f"got {self.webhook_timeout}")
        if not 0 <= self.webhook_retries <= 20:
            raise ConfigError(f"webhook retries must be within [0, 20], got {self.webhook_retries}")
        if not (math.isfinite(self.webhook_backoff) and 0 <= self.webhook_backoff <= 60):
            raise ConfigError(f"webhook backoff must be within [0, 60] s, got {self.webhook_backoff}")
        if not 1 <= self.webhook_queue <= 1_000_000:
            raise ConfigError(f"webhook queue must be within [1, 1000000], got {self.webhook_queue}")
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigError(f"--redis must be a URL starting with "
                              f"{', '.join(REDIS_SCHEMES)}; got "
                              f"{self.redis_url.partition(':')[0][:20]!r}:…")
