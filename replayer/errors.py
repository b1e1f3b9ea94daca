"""Errors a client's request can cause; each becomes an error acknowledgement with its code."""

from __future__ import annotations

from recorder.errors import TicktapeError

__all__ = ["BadRequest", "NotAllowed", "ReplayError", "Unauthorized", "UnknownLog"]


class ReplayError(TicktapeError):
    """Base: `code` goes into the acknowledgement {"ok": false, "error": {"code", "message"}}."""

    code = "internal"


class BadRequest(ReplayError):
    """A malformed payload: wrong type, missing or extra field, out-of-range value."""

    code = "bad_request"


class UnknownLog(ReplayError):
    """A log name that is not served (including anything that looks like a path)."""

    code = "unknown_log"


class NotAllowed(ReplayError):
    """A valid request that the current state refuses (e.g. control without a stream)."""

    code = "not_allowed"


class Unauthorized(ReplayError):
    """Missing or wrong token."""

    code = "unauthorized"
