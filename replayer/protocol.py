"""Client messages validated into typed requests (docs/protocol.md); anything else is bad_request."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from recorder.config import parse_instant
from recorder.errors import ConfigError
from replayer.errors import BadRequest, shown
from replayer.pacing import MAX_SPEED, MIN_SPEED

__all__ = ["ControlRequest", "SubscribeRequest", "parse_control", "parse_speed",
           "parse_subscribe", "valid_log_name"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUBSCRIBE_FIELDS = {"log", "speed", "from_seq", "symbols", "sma", "encoding", "loop", "mode",
                    "alerts"}
CONTROL_FIELDS = {"action", "seq", "ts", "speed"}
MAX_SMA = 10_000
MAX_ALERT_RULES = 32  # names in a subscribe's `alerts` list at most


def valid_log_name(name: object) -> bool:
    """Names only: no separators, no '..', nothing a filesystem could read as a path."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and ".." not in name


def _object(payload: Any, fields: set[str], what: str) -> dict[str, Any]:
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise BadRequest(f"{what} payload must be an object, got {type(payload).__name__}")
    extra = set(payload) - fields
    if extra:
        raise BadRequest(f"{what}: unknown field(s) {_fields(extra)}; "
                         f"known: {', '.join(sorted(fields))}")
    return payload


def _fields(names: set[str]) -> str:
    """Unknown field names as a message may show them: escaped, a few at most."""
    listed = sorted(shown(n) for n in names)
    return ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {shown(value)}")
    if value < minimum:
        raise BadRequest(f"{name} must be >= {minimum}, got {shown(value)}")
    return value


def parse_speed(value: Any) -> float | None:
    """A number within [0.01, 10000] or "max" (None)."""
    if value == "max":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"speed must be a number or \"max\", got {shown(value)}")
    speed = float(value)
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadRequest(f"speed must be within [{MIN_SPEED}, {MAX_SPEED:g}] or \"max\", "
                         f"got {shown(value)}")
    return speed


@dataclass(frozen=True)
class SubscribeRequest:
    log: str
    speed: float | None = 1.0
    from_seq: int = 0
    symbols: tuple[str, ...] | None = None
    sma: int = 5
    encoding: Literal["json", "arrow"] = "json"
    loop: bool = False
    broadcast: bool = False
    # true: the server's rules; a tuple: those rule names (the server resolves both into a
    # tuple of enabled rule names, replayer/alerting.py); () or false: no alerts.
    alerts: bool | tuple[str, ...] = ()


def _alerts(value: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    if not isinstance(value, list) or len(value) > MAX_ALERT_RULES or not all(
            isinstance(n, str) and n for n in value):
        raise BadRequest(f"alerts must be true, false or a list of rule names (at most "
                         f"{MAX_ALERT_RULES}), got {shown(value)}")
    return tuple(value)


def parse_subscribe(payload: Any) -> SubscribeRequest:
    data = _object(payload, SUBSCRIBE_FIELDS, "subscribe")
    if "log" not in data:
        raise BadRequest("subscribe: field 'log' is required")
    log = data["log"]
    if not isinstance(log, str):
        raise BadRequest(f"log must be a string, got {shown(log)}")
    symbols = data.get("symbols")
    if symbols is not None:
        if not isinstance(symbols, list) or not symbols or not all(
                isinstance(s, str) and s for s in symbols):
            raise BadRequest("symbols must be a non-empty list of strings")
        symbols = tuple(symbols)
    encoding = data.get("encoding", "json")
    if encoding not in ("json", "arrow"):
        raise BadRequest(f"encoding must be \"json\" or \"arrow\", got {shown(encoding)}")
    sma = _int(data.get("sma", 5), "sma", 1)
    if sma > MAX_SMA:
        raise BadRequest(f"sma must be <= {MAX_SMA}, got {shown(sma)}")
    loop = data.get("loop", False)
    if not isinstance(loop, bool):
        raise BadRequest(f"loop must be true or false, got {shown(loop)}")
    mode = data.get("mode", "stream")
    if mode not in ("stream", "broadcast"):
        raise BadRequest(f"mode must be \"stream\" or \"broadcast\", got {shown(mode)}")
    return SubscribeRequest(log=log, speed=parse_speed(data.get("speed", 1)),
                            from_seq=_int(data.get("from_seq", 0), "from_seq"),
                            symbols=symbols, sma=sma, encoding=encoding, loop=loop,
                            broadcast=mode == "broadcast", alerts=_alerts(data.get("alerts", False)))


@dataclass(frozen=True)
class ControlRequest:
    action: Literal["pause", "resume", "seek", "speed"]
    seq: int | None = None
    ts_ns: int | None = None
    speed: float | None = None


def parse_control(payload: Any) -> ControlRequest:
    data = _object(payload, CONTROL_FIELDS, "control")
    action = data.get("action")
    if action not in ("pause", "resume", "seek", "speed"):
        raise BadRequest(f"action must be pause, resume, seek or speed, got {shown(action)}")
    allowed = {"pause": set(), "resume": set(), "seek": {"seq", "ts"}, "speed": {"speed"}}
    extra = set(data) - {"action"} - allowed[action]
    if extra:
        raise BadRequest(f"control {action}: unexpected field(s) {_fields(extra)}")
    if action == "seek":
        if ("seq" in data) == ("ts" in data):
            raise BadRequest("seek needs exactly one of 'seq' or 'ts'")
        if "seq" in data:
            return ControlRequest("seek", seq=_int(data["seq"], "seq"))
        if not isinstance(data["ts"], str):
            raise BadRequest(f"ts must be an ISO 8601 string, got {shown(data['ts'])}")
        try:
            return ControlRequest("seek", ts_ns=parse_instant(data["ts"]))
        except (ConfigError, ValueError, OverflowError) as exc:
            # parse_instant's own message quotes the input unescaped: ours escapes it.
            raise BadRequest(f"ts must be an ISO 8601 instant, e.g. 2024-01-01T00:00:00Z; "
                             f"got {shown(data['ts'])}") from exc
    if action == "speed":
        if "speed" not in data:
            raise BadRequest("control speed: field 'speed' is required")
        return ControlRequest("speed", speed=parse_speed(data["speed"]))
    return ControlRequest(action)
