"""Errors of the analysis package (bad options, unusable logs); the CLI prints them as one line."""

from __future__ import annotations

from recorder.errors import TicktapeError

__all__ = ["AnalysisError", "EmptyLogError"]


class AnalysisError(TicktapeError):
    """An invalid analysis option (window, interval, span) or unwritable output."""


class EmptyLogError(AnalysisError):
    """The log holds no events to analyze."""

    exit_code = 1
