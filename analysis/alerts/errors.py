"""Errors of the alerts package; the CLI prints them as one line (exit 2)."""

from __future__ import annotations

from analysis.errors import AnalysisError

__all__ = ["AlertConfigError", "AlertError"]


class AlertError(AnalysisError):
    """Alerts cannot be evaluated as asked (e.g. batches out of order)."""


class AlertConfigError(AlertError):
    """The rules file is unreadable, not TOML, or names an unknown key or a bad value."""
