"""Guardrails of a rollout, measured from the servers' own ``/metrics``.

A rollout watches the requests of the new side only (a variant, or a model version): the
``mmserve_endpoint_requests_total`` counter and the ``mmserve_endpoint_request_seconds``
histogram, summed over the servers, as increases since the rollout started. Its errors are
its own failures, ``outcome="server_error"``: a 5xx, which includes a model that raised, a
request past its timeout (504) and a model that could not load in time (503). A 4xx
(``outcome="client_error"``: a body that does not decode, rows that do not fit the model, a
429 past the in-flight limit) is the caller's and is not counted at all, neither as an error
nor as a request: whoever can call the endpoint, pinning the new variant or not, cannot make
it look worse with bad input, nor make up the ``min_requests`` that lets a few real failures
decide.

A server whose counters went down restarted: its new counts are all increase (as
Prometheus' ``rate`` reads a counter reset). The p99 is interpolated within its histogram
bucket, as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from serving.errors import MetricsUnavailable

REQUESTS = "mmserve_endpoint_requests"
SECONDS = "mmserve_endpoint_request_seconds"
SERVER_ERROR, CLIENT_ERROR = "server_error", "client_error"
Select = Callable[[dict[str, str]], bool]


@dataclass
class Counts:
    """Requests the variant answered or failed on its own (4xx left out), its server errors,
    and the latency histogram (cumulative, by upper bound in s)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def plus(self, other: Counts) -> Counts:
        bounds = set(self.buckets) | set(other.buckets)
        merged = {b: self.buckets.get(b, 0.0) + other.buckets.get(b, 0.0) for b in bounds}
        return Counts(self.requests + other.requests, self.errors + other.errors, merged)

    def since(self, earlier: Counts) -> Counts:
        """The increase from ``earlier``; all of these counts if the counters were reset."""
        if self.requests < earlier.requests or self.errors < earlier.errors:
            return self
        buckets = {b: v - earlier.buckets.get(b, 0.0) for b, v in self.buckets.items()}
        return Counts(self.requests - earlier.requests, self.errors - earlier.errors, buckets)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the latency, in seconds (``None`` without observations)."""
        bounds = sorted(self.buckets)
        total = self.buckets.get(math.inf, 0.0)
        if not bounds or total <= 0:
            return None
        rank, lower, below = q * total, 0.0, 0.0
        for bound in bounds:
            count = self.buckets[bound]
            if count >= rank:
                if math.isinf(bound):
                    return lower  # past the largest finite bucket: its bound is all we know
                inside = count - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, count
        return lower


def parse(text: str, select: Select) -> Counts:
    """The counts of the series ``select`` picks (by their labels) in a scrape."""
    counts = Counts()
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for sample in family.samples:
                outcome = sample.labels.get("outcome")
                if not sample.name.endswith("_total") or outcome == CLIENT_ERROR:
                    continue  # a caller's 4xx says nothing about the variant
                if select(sample.labels):
                    counts.requests += sample.value
                    if outcome == SERVER_ERROR:
                        counts.errors += sample.value
        elif family.name == SECONDS:
            for sample in family.samples:
                if sample.name.endswith("_bucket") and select(sample.labels):
                    bound = float(sample.labels["le"])
                    counts.buckets[bound] = counts.buckets.get(bound, 0.0) + sample.value
    return counts


def fetch(server: str, timeout: float = 10.0) -> str:
    """The text of ``server``'s ``/metrics``."""
    url = server.rstrip("/") + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except OSError as err:  # refused, timed out, HTTP errors (URLError, HTTPError)
        raise MetricsUnavailable(server, getattr(err, "reason", err)) from None


class Watch:
    """The selected series' increase since :meth:`start`, over every server."""

    def __init__(
        self,
        servers: list[str],
        select: Select,
        fetch: Callable[[str], str] = fetch,
        max_failures: int = 3,
    ):
        self.servers = servers
        self.select = select
        self.fetch = fetch
        self.max_failures = max_failures
        self._last: dict[str, Counts] = {}
        self._total: dict[str, Counts] = {}
        self._failures: dict[str, int] = {}

    def start(self) -> None:
        """Read every server once: the baseline. Raises :class:`MetricsUnavailable` (before
        any weight has moved) when one cannot be read."""
        for server in self.servers:
            self._last[server] = parse(self.fetch(server), self.select)
            self._total[server] = Counts()
            self._failures[server] = 0

    def poll(self) -> Counts:
        """The increase so far; a server unread ``max_failures`` times running raises."""
        for server in self.servers:
            try:
                now = parse(self.fetch(server), self.select)
            except MetricsUnavailable:
                self._failures[server] += 1
                if self._failures[server] >= self.max_failures:
                    raise
                continue
            self._failures[server] = 0
            self._total[server] = self._total[server].plus(now.since(self._last[server]))
            self._last[server] = now
        total = Counts()
        for counts in self._total.values():
            total = total.plus(counts)
        return total


@dataclass(frozen=True, slots=True)
class Breach:
    guardrail: str
    measured: float
    limit: float
    requests: int

    @property
    def reason(self) -> str:
        if self.guardrail == "error_rate":
            return (
                f"error rate {self.measured:.4g} over {self.requests} requests is above "
                f"--max-error-rate {self.limit:g}"
            )
        return (
            f"p99 latency {self.measured:.4g} ms over {self.requests} requests is above "
            f"--max-p99-ms {self.limit:g}"
        )


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Limits on the new side; judged once it has answered ``min_requests`` requests."""

    max_error_rate: float | None = 0.01
    max_p99_ms: float | None = None
    min_requests: int = 10

    def breach(self, counts: Counts) -> Breach | None:
        if counts.requests < self.min_requests:
            return None
        requests = int(counts.requests)
        if self.max_error_rate is not None and counts.error_rate > self.max_error_rate:
            return Breach("error_rate", counts.error_rate, self.max_error_rate, requests)
        p99 = counts.quantile(0.99)
        if self.max_p99_ms is not None and p99 is not None and p99 * 1000 > self.max_p99_ms:
            return Breach("p99_ms", p99 * 1000, self.max_p99_ms, requests)
        return None
