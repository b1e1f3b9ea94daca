"""Live alerts: the server's rules, a subscriber's selection of them, and the `alert` payload.

The rules run where the log is read: each `Cursor` holds an `AlertEngine` (built and warmed
up in the cursor's worker thread) and attaches to every chunk the alerts its events raised,
so the event loop only slices and sends them (docs/protocol.md, "Alerts"). This module is the
glue the event loop does use: which rules a `subscribe` asked for, the engine config for them,
and the wire form of an alert.

A selection is a tuple of rule names (empty: no alerts). Evaluating only the selected rules
gives exactly the alerts a pass with all of them would give for those rules: the engine keeps
state per (rule, symbol), and no rule reads another's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from socketio import packet as sio_packet

from analysis.alerts import RULE_CLASSES, Alert, AlertConfig
from replayer.encoding import FastPacket
from replayer.errors import BadRequest, shown

__all__ = ["Alerting", "alert_packet", "alert_payload", "alerts_between"]


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The `alert` event: the 8 fields of `ticktape alerts --json` (ts ISO 8601), then ts_ns."""
    return alert.to_json() | {"ts_ns": alert.ts}


def alert_packet(alert: Alert) -> str:
    """The whole Socket.IO `alert` packet, encoded once and sent as-is (as `ticks` are):
    through python-socketio's emit, each event would cost a task and a loop turn."""
    encoded: str = FastPacket(sio_packet.EVENT, data=["alert", alert_payload(alert)],
                              namespace="/").encode()
    return encoded


def alerts_between(alerts: list[Alert], seqs: np.ndarray, first: int, last: int) -> list[Alert]:
    """The alerts (ordered by seq, with their seqs in `seqs`) raised by events first..last."""
    if not alerts:
        return []
    lo = int(np.searchsorted(seqs, first, side="left"))
    hi = int(np.searchsorted(seqs, last, side="right"))
    return alerts[lo:hi]


class Alerting:
    """The server's rules, and where the alerts of streams go besides their clients
    (`on_alerts`: the webhooks). One per server."""

    def __init__(self, config: AlertConfig,
                 on_alerts: Callable[[list[Alert]], None] | None = None) -> None:
        self.config = config
        self.names = tuple(r.name for r in config.enabled)
        self.on_alerts = on_alerts
        self._configs: dict[tuple[str, ...], AlertConfig] = {}

    def select(self, asked: bool | tuple[str, ...]) -> tuple[str, ...]:
        """`subscribe`'s `alerts` as the rule names to run: true -> every enabled rule, false
        -> none, a list -> those (each must be one of the server's enabled rules)."""
        if asked is True:
            return self.names
        if asked is False or not asked:
            return ()
        known = {c.name for c in RULE_CLASSES}
        unknown = [n for n in asked if n not in known]
        if unknown:
            raise BadRequest(f"alerts: unknown rule(s) {', '.join(shown(n) for n in unknown[:5])}"
                             f"; rules: {', '.join(sorted(known))}")
        disabled = [n for n in asked if n not in self.names]
        if disabled:
            raise BadRequest(f"alerts: rule(s) {', '.join(shown(n) for n in disabled[:5])} "
                             f"disabled on this server; enabled: "
                             f"{', '.join(self.names) or 'none'}")
        wanted = set(asked)
        return tuple(n for n in self.names if n in wanted)  # rule order, no repeats

    def engine_config(self, selection: tuple[str, ...]) -> AlertConfig | None:
        """The server's config with only `selection` enabled (None: no alerts)."""
        if not selection:
            return None
        config = self._configs.get(selection)
        if config is None:
            wanted = set(selection)
            config = self._configs[selection] = AlertConfig(
                rules=tuple(r if r.name in wanted else replace(r, enabled=False)
                            for r in self.config.rules),
                source=self.config.source)
        return config

    def publish(self, alerts: list[Alert]) -> None:
        """Alerts a stream just sent to its clients: on to the webhooks, if any."""
        if alerts and self.on_alerts is not None:
            self.on_alerts(alerts)
