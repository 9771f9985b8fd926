"""A short in-memory history of each endpoint variant's figures, for the console's plots.

Every :data:`SAMPLE_S` the server reads its own endpoint counters (requests by outcome, the
latency histogram: what ``/metrics`` shows, every process's with ``--workers``) into a ring
of :data:`KEPT` samples. A variant's series is then the differences of neighbouring samples:
requests per second, the share that failed on the server's side, and p50/p99 interpolated
in the histogram's buckets as Prometheus' ``histogram_quantile`` does. Nothing is written
anywhere: a restarted server starts a new history.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import multiprocess
from prometheus_client.core import Metric

from serving.http._metrics import Metrics

log = logging.getLogger("mmserve.http")

SAMPLE_S = 5.0
"""Seconds between two samples."""
KEPT = 120
"""Samples kept: ten minutes at :data:`SAMPLE_S`."""
_REQUESTS = "mmserve_endpoint_requests_total"
_BUCKETS = "mmserve_endpoint_request_seconds_bucket"
Variant = tuple[str, str]  # (endpoint, variant)


@dataclass
class _Totals:
    """One variant's counters at one moment (summed over the models that answered)."""

    requests: float = 0.0
    server_errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative count of requests at or under each bound (``+Inf`` included)."""


@dataclass(frozen=True)
class _Sample:
    at: float
    """Wall-clock seconds (what the console plots against)."""
    totals: dict[Variant, _Totals]


class History:
    """The ring of samples of one server, and each variant's series read from it."""

    def __init__(self, metrics: Metrics, kept: int = KEPT, clock: Callable[[], float] = time.time):
        self._metrics = metrics
        self._samples: deque[_Sample] = deque(maxlen=kept)
        self._clock = clock

    async def sample_forever(self, every_s: float = SAMPLE_S) -> None:
        """Take a sample now and every ``every_s`` after (a task of the server's life)."""
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception:  # a figure missing from a plot is no reason to stop sampling
                log.exception("the console's history sample failed; trying again later")
            await asyncio.sleep(every_s)

    def sample(self) -> None:
        self._samples.append(_Sample(self._clock(), _totals(self._families())))

    def series(self, endpoint: str) -> dict[str, list[dict[str, Any]]]:
        """Per variant of ``endpoint``, one point per pair of neighbouring samples: ``t``
        (seconds since the epoch), ``rps``, ``error_rate`` (server errors per request, or
        ``None`` without requests), ``p50_ms`` and ``p99_ms`` (``None`` without requests)."""
        samples = list(self._samples)
        names = {v for s in samples for (e, v) in s.totals if e == endpoint}
        return {
            name: [_point(a, b, (endpoint, name)) for a, b in itertools.pairwise(samples)]
            for name in sorted(names)
        }

    def _families(self) -> Iterable[Metric]:
        """The endpoint families as ``/metrics`` has them: every process's when several
        write their counts to ``PROMETHEUS_MULTIPROC_DIR``, else this one's."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            return multiprocess.MultiProcessCollector(None).collect()  # type: ignore[no-untyped-call]
        return [
            *self._metrics.endpoint_requests.collect(),
            *self._metrics.endpoint_latency.collect(),
        ]


def _totals(families: Iterable[Metric]) -> dict[Variant, _Totals]:
    totals: dict[Variant, _Totals] = {}
    for family in families:
        for s in family.samples:
            if s.name not in (_REQUESTS, _BUCKETS):
                continue
            t = totals.setdefault((s.labels["endpoint"], s.labels["variant"]), _Totals())
            if s.name == _REQUESTS:
                t.requests += s.value
                t.server_errors += s.value if s.labels["outcome"] == "server_error" else 0.0
            else:
                bound = float(s.labels["le"])
                t.buckets[bound] = t.buckets.get(bound, 0.0) + s.value
    return totals


def _point(before: _Sample, after: _Sample, variant: Variant) -> dict[str, Any]:
    a, b = before.totals.get(variant, _Totals()), after.totals.get(variant, _Totals())
    requests = b.requests - a.requests
    seconds = max(after.at - before.at, 1e-9)
    deltas = sorted((bound, n - a.buckets.get(bound, 0.0)) for bound, n in b.buckets.items())
    return {
        "t": round(after.at, 3),
        "rps": round(requests / seconds, 3),
        "error_rate": round((b.server_errors - a.server_errors) / requests, 4)
        if requests
        else None,
        "p50_ms": _quantile(0.5, deltas),
        "p99_ms": _quantile(0.99, deltas),
    }


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile in ms of cumulative ``(bound, count)`` buckets, interpolated
    linearly within the bucket it falls in; the largest finite bound when it falls in
    ``+Inf``'s; ``None`` without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return round(lower * 1000, 3)
            share = (rank - below) / (count - below) if count > below else 1.0
            return round((lower + (bound - lower) * share) * 1000, 3)
        lower, below = bound, count
    return round(lower * 1000, 3)
