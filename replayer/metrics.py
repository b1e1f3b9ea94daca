"""Prometheus text-format metrics, kept in-process (no dependency; a few counters and one histogram)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Metrics"]

LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@dataclass
class Metrics:
    clients: int = 0
    streams: int = 0
    ticks_sent: int = 0
    bytes_sent: int = 0
    batches_sent: int = 0
    backpressure_waits: int = 0
    slow_consumers_dropped: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lateness_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    lateness_sum: float = 0.0
    queue_depth: dict[str, int] = field(default_factory=dict)  # per client sid

    def observe_lateness(self, seconds: float) -> None:
        for i, bound in enumerate(LATENESS_BUCKETS):
            if seconds <= bound:
                self.lateness_counts[i] += 1
                break
        else:
            self.lateness_counts[-1] += 1
        self.lateness_sum += seconds

    def sent(self, ticks: int, size: int) -> None:
        self.ticks_sent += ticks
        self.bytes_sent += size
        self.batches_sent += 1

    def render(self) -> str:
        lines = [
            "# HELP ticktape_clients Connected Socket.IO clients.",
            "# TYPE ticktape_clients gauge", f"ticktape_clients {self.clients}",
            "# HELP ticktape_streams Active replay streams.",
            "# TYPE ticktape_streams gauge", f"ticktape_streams {self.streams}",
            "# HELP ticktape_ticks_sent_total Ticks sent to clients.",
            "# TYPE ticktape_ticks_sent_total counter",
            f"ticktape_ticks_sent_total {self.ticks_sent}",
            "# HELP ticktape_bytes_sent_total Payload bytes of ticks batches sent.",
            "# TYPE ticktape_bytes_sent_total counter",
            f"ticktape_bytes_sent_total {self.bytes_sent}",
            "# HELP ticktape_batches_sent_total Ticks batches sent.",
            "# TYPE ticktape_batches_sent_total counter",
            f"ticktape_batches_sent_total {self.batches_sent}",
            "# HELP ticktape_backpressure_waits_total Times a stream waited for a slow client.",
            "# TYPE ticktape_backpressure_waits_total counter",
            f"ticktape_backpressure_waits_total {self.backpressure_waits}",
            "# HELP ticktape_slow_consumers_dropped_total Broadcast clients dropped for lag.",
            "# TYPE ticktape_slow_consumers_dropped_total counter",
            f"ticktape_slow_consumers_dropped_total {self.slow_consumers_dropped}",
            "# HELP ticktape_queue_depth Batches queued for a client, largest now.",
            "# TYPE ticktape_queue_depth gauge",
            f"ticktape_queue_depth {max(self.queue_depth.values(), default=0)}",
            "# HELP ticktape_errors_total Error acknowledgements by code.",
            "# TYPE ticktape_errors_total counter",
        ]
        lines += [f'ticktape_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
        lines += ["# HELP ticktape_lateness_seconds How late batches left versus their due time.",
                  "# TYPE ticktape_lateness_seconds histogram"]
        total = 0
        for bound, count in zip(LATENESS_BUCKETS, self.lateness_counts, strict=False):
            total += count
            lines.append(f'ticktape_lateness_seconds_bucket{{le="{bound}"}} {total}')
        total += self.lateness_counts[-1]
        lines += [f'ticktape_lateness_seconds_bucket{{le="+Inf"}} {total}',
                  f"ticktape_lateness_seconds_sum {self.lateness_sum:.6f}",
                  f"ticktape_lateness_seconds_count {total}"]
        return "\n".join(lines) + "\n"
