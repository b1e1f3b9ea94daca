"""Errors a client's request can cause, and how messages for clients are made safe to send."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from recorder.errors import TicktapeError

__all__ = ["BadRequest", "LogError", "NotAllowed", "ReplayError", "Unauthorized", "Unavailable",
           "UnknownLog", "safe_message", "scrub_paths", "shown"]

SHOWN_CHARS = 60  # client input quoted in a message: at most this much of its ascii() form
MESSAGE_CHARS = 300  # any message sent to a client: at most this long
# An absolute path left in a message (after the served paths were replaced by log names):
# a slash not preceded by a word, ':' (URLs) or another slash, then path characters.
_ABSOLUTE = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)*([\w.@+~-]+)")


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


class Unavailable(ReplayError):
    """Fleet mode: Redis cannot be reached to find or start a broadcast; try again."""

    code = "unavailable"


class LogError(ReplayError):
    """The log cannot be read where the request needs it (damaged, vanished, unrecovered)."""

    code = "log_error"


def shown(value: object) -> str:
    """Client input as it may appear in a message: escaped to ASCII (no lone surrogates, no
    control or bidi characters reach a terminal or a page) and truncated."""
    text = ascii(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def safe_message(text: str) -> str:
    """Any message for a client: encodable as UTF-8 whatever it holds, and bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def _forms(path: Path) -> list[str]:
    """The spellings of a path a message may carry: as given, absolute and resolved."""
    forms = {str(path), os.path.abspath(path)}
    with contextlib.suppress(OSError):
        forms.add(str(path.resolve()))
    # "." or "" would match inside ordinary words.
    return [f for f in forms if f not in ("", ".", os.sep)]


def scrub_paths(text: str, names: Iterable[tuple[Path, str]], root: Path | None = None) -> str:
    """Replace server paths in `text`: each log's path by its name, anything under `root` by
    its path relative to it, and any other absolute path by its last part. Clients learn
    which log failed, never where the server keeps it."""
    pairs = [(form, name) for path, name in names for form in _forms(path)]
    if root is not None:
        pairs += [(form + os.sep, "") for form in _forms(root)]
    for form, replacement in sorted(pairs, key=lambda p: -len(p[0])):  # longest first
        text = text.replace(form, replacement)
    return _ABSOLUTE.sub(lambda m: m.group(1), text)
