"""Errors of `ticktape import`: each names the file (and line) the user has to look at."""

from __future__ import annotations

from recorder.errors import TicktapeError

__all__ = ["ChecksumError", "ImportInputError", "MalformedRowError", "UnrecognisedFormatError"]


class ImportInputError(TicktapeError):
    """An input file cannot be imported (missing, unreadable, mixed formats, no symbol)."""


class UnrecognisedFormatError(ImportInputError):
    """The content matches none of the known formats (or not the one --format named)."""


class ChecksumError(ImportInputError):
    """A `.CHECKSUM` sidecar does not match its file, or is itself malformed."""


class MalformedRowError(ImportInputError):
    """A row breaks its format's rules; the message names `file:line`."""
