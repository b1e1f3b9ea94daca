"""The error hierarchy every ticktape package builds on; the CLI turns these into one line."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LogDamagedError",
    "LogExistsError",
    "LogLockedError",
    "LogNotFoundError",
    "NeedsRecoveryError",
    "NotALogError",
    "TicktapeError",
]


class TicktapeError(Exception):
    """Base of every error a user can cause; `exit_code` follows docs/cli.md (1 problem, 2 input)."""

    exit_code = 2


class ConfigError(TicktapeError):
    """An invalid parameter or option value."""


class LogNotFoundError(TicktapeError):
    """The path names nothing."""


class NotALogError(TicktapeError):
    """The path exists but holds no ticktape log (foreign Parquet, stray files, unreadable)."""


class LogExistsError(TicktapeError):
    """Refusing to overwrite an existing log without --overwrite."""


class LogLockedError(TicktapeError):
    """Another live recorder holds the log."""

    exit_code = 1


class LogDamagedError(TicktapeError):
    """The log is a ticktape log but its content breaks the format's rules."""

    exit_code = 1


class NeedsRecoveryError(LogDamagedError):
    """A recorder died with an open segment; `ticktape recover` must seal it first."""
