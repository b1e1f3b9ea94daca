"""Prometheus metrics (prometheus_client): plain counters in the hot path, exposed on demand.

The replay loops only add to plain ints (`Metrics`); nothing in the hot path touches
prometheus_client. `render()` builds the exposition from them (a custom collector), so a
single process pays nothing between scrapes.

Under `ticktape replay --workers N` the supervisor sets `PROMETHEUS_MULTIPROC_DIR` for every
worker: each worker then copies its figures into prometheus_client's multiprocess files
(counters by their increase, gauges as set) every `SYNC_INTERVAL` and before answering a
scrape, and `/metrics` on any worker aggregates the files of all of them
(`MultiProcessCollector`): counters and the histogram summed, `ticktape_clients`,
`ticktape_streams`, `ticktape_processes`, `ticktape_fleet_leading` summed over live workers,
`ticktape_queue_depth` the largest of live workers. Other workers' figures are at most one
sync interval old.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["LATENESS_BUCKETS", "MULTIPROC_ENV", "SYNC_INTERVAL", "Metrics"]

LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL = 1.0  # seconds between a worker's copies into the multiprocess files

# name (without _total), help, Metrics attribute: counters that only grow.
COUNTERS = (
    ("ticktape_ticks_sent", "Ticks sent to clients.", "ticks_sent"),
    ("ticktape_bytes_sent", "Payload bytes of ticks batches sent.", "bytes_sent"),
    ("ticktape_batches_sent", "Ticks batches sent.", "batches_sent"),
    ("ticktape_backpressure_waits", "Times a stream waited for a slow client.",
     "backpressure_waits"),
    ("ticktape_slow_consumers_dropped", "Broadcast clients dropped for lag.",
     "slow_consumers_dropped"),
    ("ticktape_fleet_published", "Fleet: broadcast batches published to Redis by this "
     "process as leader.", "fleet_published"),
    ("ticktape_fleet_published_bytes", "Fleet: bytes of those messages.",
     "fleet_published_bytes"),
    ("ticktape_fleet_takeovers", "Fleet: broadcasts this process started or took over.",
     "fleet_takeovers"),
    ("ticktape_fleet_gap_ticks", "Fleet: ticks read from the log to fill a gap in what "
     "Redis delivered.", "fleet_gap_ticks"),
    ("ticktape_fleet_duplicate_ticks", "Fleet: ticks Redis delivered twice, dropped.",
     "fleet_duplicate_ticks"),
    ("ticktape_fleet_redis_errors", "Fleet: failed Redis calls (each retried).",
     "fleet_redis_errors"),
    ("ticktape_alerts_sent", "Alert events sent to clients.", "alerts_sent"),
    ("ticktape_webhook_delivered", "Alerts a webhook accepted (2xx).", "webhook_delivered"),
    ("ticktape_webhook_failures", "Webhook attempts that failed (error status, connection "
     "error, timeout); each is retried until the retries run out.", "webhook_failures"),
    ("ticktape_webhook_abandoned", "Alerts given up after every retry failed.",
     "webhook_abandoned"),
    ("ticktape_webhook_dropped", "Alerts dropped from a full webhook queue (the oldest).",
     "webhook_dropped"),
)
# name, help, Metrics attribute, multiprocess mode.
GAUGES = (
    ("ticktape_clients", "Connected Socket.IO clients.", "clients", "livesum"),
    ("ticktape_streams", "Active replay streams.", "streams", "livesum"),
    ("ticktape_fleet_leading", "Fleet: broadcasts this process plays for the fleet.",
     "fleet_leading", "livesum"),
    ("ticktape_processes", "Server processes answering (workers under --workers).",
     "processes", "livesum"),
    ("ticktape_webhook_queued", "Alerts waiting in webhook queues.", "webhook_queued",
     "livesum"),
)


@dataclass
class Metrics:
    clients: int = 0
    streams: int = 0
    ticks_sent: int = 0
    bytes_sent: int = 0
    batches_sent: int = 0
    backpressure_waits: int = 0
    slow_consumers_dropped: int = 0
    fleet_published: int = 0
    fleet_published_bytes: int = 0
    fleet_takeovers: int = 0
    fleet_gap_ticks: int = 0
    fleet_duplicate_ticks: int = 0
    fleet_redis_errors: int = 0
    fleet_leading: int = 0
    processes: int = 1
    alerts_sent: int = 0
    webhook_delivered: int = 0
    webhook_failures: int = 0
    webhook_abandoned: int = 0
    webhook_dropped: int = 0
    webhook_queued: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lateness_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_BUCKETS) + 1))
    lateness_sum: float = 0.0
    queue_depth: dict[str, int] = field(default_factory=dict)  # per client sid
    # Set when PROMETHEUS_MULTIPROC_DIR is: this process's copy in the shared files.
    _shared: _Shared | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if os.environ.get(MULTIPROC_ENV):
            self._shared = _Shared()

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

    @property
    def multiprocess(self) -> bool:
        return self._shared is not None

    def sync(self) -> None:
        """Copy this process's figures into the multiprocess files (no-op otherwise)."""
        if self._shared is not None:
            self._shared.sync(self)

    def render(self, log_gaps: dict[str, tuple[int, int]] | None = None) -> str:
        """The Prometheus text exposition: this process's, or every worker's; with
        `log_gaps` ({log: (gaps, missing trades)}), the served logs' trade-id gaps too."""
        registry = CollectorRegistry(auto_describe=False)
        if self._shared is not None:
            from prometheus_client import multiprocess

            self._shared.sync(self)
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(_Collector(self))
        if log_gaps:
            # Facts about the logs on disk (every worker sees the same): not summed.
            registry.register(_LogGaps(log_gaps))
        return generate_latest(registry).decode()


class _LogGaps:
    """Trade-id gaps that live recorders noted in the served logs (docs/feeds.md)."""

    def __init__(self, gaps: dict[str, tuple[int, int]]) -> None:
        self.gaps = gaps

    def collect(self) -> Iterator[Any]:
        count = GaugeMetricFamily("ticktape_log_trade_id_gaps", "Trade-id gaps a live "
                                  "recorder noted in a served log (backfilled or not).",
                                  labels=["log"])
        missing = GaugeMetricFamily("ticktape_log_missing_trades", "Trades of those gaps "
                                    "still missing from a served log.", labels=["log"])
        for name, (gaps, lost) in sorted(self.gaps.items()):
            count.add_metric([name], gaps)
            missing.add_metric([name], lost)
        yield count
        yield missing


class _Collector:
    """One process's figures as metric families (prometheus_client's custom collector API)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        for name, text, attr, _mode in GAUGES:
            yield GaugeMetricFamily(name, text, value=getattr(m, attr))
        for name, text, attr in COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(m, attr))
        yield GaugeMetricFamily("ticktape_queue_depth", "Batches queued for a client, largest now.",
                                value=max(m.queue_depth.values(), default=0))
        errors = CounterMetricFamily("ticktape_errors", "Error acknowledgements by code.",
                                     labels=["code"])
        for code, count in sorted(m.errors.items()):
            errors.add_metric([code], count)
        yield errors
        buckets, total = [], 0
        for bound, count in zip(LATENESS_BUCKETS, m.lateness_counts, strict=False):
            total += count
            buckets.append((str(bound), total))
        total += m.lateness_counts[-1]
        buckets.append(("+Inf", total))
        yield HistogramMetricFamily("ticktape_lateness_seconds",
                                    "How late batches left versus their due time.",
                                    buckets=buckets, sum_value=m.lateness_sum)


class _Shared:
    """This worker's metric objects in prometheus_client's multiprocess mode; `sync` adds
    what grew since the last sync (counters only grow) and sets the gauges."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.counters = {attr: Counter(name, text, registry=None) for name, text, attr in COUNTERS}
        self.gauges = {attr: Gauge(name, text, registry=None, multiprocess_mode=mode)  # type: ignore[arg-type]
                       for name, text, attr, mode in GAUGES}
        self.depth = Gauge("ticktape_queue_depth", "Batches queued for a client, largest now.",
                           registry=None, multiprocess_mode="livemax")
        self.errors = Counter("ticktape_errors", "Error acknowledgements by code.", ["code"],
                              registry=None)
        self.lateness = Histogram("ticktape_lateness_seconds",
                                  "How late batches left versus their due time.",
                                  buckets=LATENESS_BUCKETS, registry=None)
        self.done: dict[str, float] = defaultdict(float)  # what the files hold already

    def _add(self, key: str, value: float, counter: Any) -> None:
        grown = value - self.done[key]
        if grown > 0:
            counter.inc(grown)
            self.done[key] = value

    def sync(self, m: Metrics) -> None:
        for attr, counter in self.counters.items():
            self._add(attr, getattr(m, attr), counter)
        for code, count in list(m.errors.items()):
            self._add(f"errors:{code}", count, self.errors.labels(code))
        for attr, gauge in self.gauges.items():
            gauge.set(getattr(m, attr))
        self.depth.set(max(m.queue_depth.values(), default=0))
        # The histogram by what each bucket and the sum grew. prometheus_client has no public
        # bulk update; `_buckets` (per-bucket counts, cumulated on collection) and `_sum` are
        # its value holders, stable across 0.x (pinned <1): observing every batch's lateness
        # here instead would put a file write per batch into the replay loop.
        for i, count in enumerate(m.lateness_counts):
            self._add(f"late:{i}", count, self.lateness._buckets[i])
        self._add("late:sum", m.lateness_sum, self.lateness._sum)
