"""Prometheus metrics of a stream consumer, served on their own port (``--metrics-port``).

Each consumer has its own collector registry, so several can run in one process (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from serving.errors import InvalidName

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600)


class StreamMetrics:
    """Events scored, batch sizes, lag, pending entries, dead letters, late events, Redis
    retries."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "mmserve_stream_events",
            "Events scored: outputs written to the sink (rate() of it: events/s).",
            ["model", "version"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mmserve_stream_batch_size",
            "Events read into one batch (one model call).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.lag = _BatchHistogram(
            "mmserve_stream_lag_seconds",
            "From an event's entry id time to its output written, on the Redis clock.",
            LAG_BUCKETS,
        )
        self.registry.register(self.lag)
        self.pending = Gauge(
            "mmserve_stream_pending",
            "Entries delivered to the group's consumers and not yet committed.",
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "mmserve_stream_dead_lettered",
            "Events written to the dead-letter stream, by kind of error.",
            ["error"],
            registry=self.registry,
        )
        self.late = Counter(
            "mmserve_stream_late_events",
            "Events later than the features' allowed lateness: added to no window, and "
            "scored or dead-lettered (outcome).",
            ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter(
            "mmserve_stream_redis_retries",
            "Redis calls that failed (Redis away) and were tried again after a backoff.",
            registry=self.registry,
        )
        self._server: Any = None

    def scored(self, model: str, version: str, lags: Sequence[float] | np.ndarray) -> None:
        self.events.labels(model, version).inc(len(lags))
        self.lag.observe(lags)

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
        try:
            self._server, _ = start_http_server(port, host, registry=self.registry)
        except OSError as err:  # taken, or not an address of this machine
            rule = f"cannot serve metrics at {host}:{port}: {err.strerror or err}"
            raise InvalidName("metrics port", str(port), rule) from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _BatchHistogram(Collector):
    """A histogram fed a batch of values at a time (prometheus-client's takes one per call,
    ~1 µs each: 3% of the time of a batch of a cheap model)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]):
        self._name, self._documentation = name, documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last one: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, values: Sequence[float] | np.ndarray) -> None:
        if len(values) == 0:
            return
        array = np.asarray(values, dtype=np.float64)
        index = np.searchsorted(self._bounds, array, side="left")  # bucket i: value <= bound i
        counts = np.bincount(index, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(array.sum())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        yield HistogramMetricFamily(
            self._name,
            self._documentation,
            buckets=list(zip(les, cumulative, strict=True)),
            sum_value=total,
        )
