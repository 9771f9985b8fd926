"""Prometheus metrics of the real-time server, served at ``GET /metrics``.

Each app has its own collector registry (tests build several apps in one process). With
``mmserve serve --workers N`` the processes write their counts to files in
``PROMETHEUS_MULTIPROC_DIR`` (the CLI makes one when it is unset), and ``/metrics`` of any
of them adds every process up (prometheus-client's multiprocess mode); the jobs' figures
come from the queue, the models loaded from the process scraped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from workers.queue import LATENCY_BUCKETS as JOB_BUCKETS

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The server's counters, histograms and gauges."""

    def __init__(self, loaded_models: Callable[[], int]):
        self.registry = CollectorRegistry()
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        model = ["model", "version"]
        self.requests = Counter(
            "mmserve_requests",
            "Requests answered, by route, model, version and status code.",
            ["route", *model, "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mmserve_request_seconds",
            "Time from request to response, by route, model and version.",
            ["route", *model],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mmserve_batch_size",
            "Requests joined into one model call by the micro-batcher.",
            model,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "mmserve_queue_wait_seconds",
            "Time a request waited for its model call to start.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "mmserve_cold_starts",
            "Models loaded because a request needed them.",
            model,
            registry=self.registry,
        )
        self.load_seconds = Histogram(
            "mmserve_model_load_seconds",
            "Time to load a model from the store.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "mmserve_errors",
            "Failed requests, by kind of error.",
            ["kind"],
            registry=self.registry,
        )
        endpoint = ["endpoint", "variant", "model"]
        self.endpoint_requests = Counter(
            "mmserve_endpoint_requests",
            "Requests an endpoint's variant answered, by model version(s) and outcome "
            "(ok, client_error, server_error).",
            [*endpoint, "outcome"],
            registry=self.registry,
        )
        self.endpoint_latency = Histogram(
            "mmserve_endpoint_request_seconds",
            "Time an endpoint's variant took to answer (rollout guardrails read its p99).",
            endpoint,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_requests = Counter(
            "mmserve_shadow_requests",
            "Requests also scored by an endpoint's shadow, by outcome (ok, error, skipped).",
            ["endpoint", "model", "outcome"],
            registry=self.registry,
        )
        self.capture_rows = Counter(
            "mmserve_capture_rows",
            "Captured rows written to the store.",
            ["endpoint"],
            registry=self.registry,
        )
        self.capture_dropped = Counter(
            "mmserve_capture_dropped_rows",
            "Captured rows dropped, by reason (buffer_full, store_error).",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        # Read at scrape time, beside the counters (and, in multiprocess mode, beside what
        # the processes' files add up: these are not in them).
        self._live: list[Collector] = [_LoadedCollector(loaded_models)]
        self.registry.register(self._live[0])

    def observe_request(
        self, route: str, model: str, version: object, code: int, seconds: float
    ) -> None:
        """Count one answered request (and time it, if it named a model)."""
        key = (route, model, str(version), str(code))
        children = self._children.get(key)
        if children is None:  # labels() costs more than the count: keep its children
            latency = self.latency.labels(*key[:3]) if model else None
            children = self._children[key] = (self.requests.labels(*key), latency)
        children[0].inc()
        if children[1] is not None:
            children[1].observe(seconds)

    def watch_jobs(self, queue: Any) -> None:
        """Export the async jobs' figures: queue depth, and the counters every worker adds to
        (kept beside the queue, so one scrape of any API process sees all workers)."""
        self._live.append(_JobsCollector(queue))
        self.registry.register(self._live[-1])

    def watch(self, collector: Collector) -> None:
        """Export figures read at scrape time (endpoints' weights and rollouts)."""
        self._live.append(collector)
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self._scraped())

    def model_figures(self, name: str, version: str) -> dict[str, float]:
        """What the counters hold of one model version (every process's, as ``/metrics``):
        ``answered`` and ``failed`` requests (status below 400, and the rest),
        ``request_seconds`` (their time), ``calls`` of the model, ``queued`` requests and
        ``queue_seconds`` (their wait for a call)."""
        wanted = {
            "mmserve_request_seconds_sum": "request_seconds",
            "mmserve_batch_size_count": "calls",
            "mmserve_queue_wait_seconds_count": "queued",
            "mmserve_queue_wait_seconds_sum": "queue_seconds",
        }
        figures = dict.fromkeys(["answered", "failed", *wanted.values()], 0.0)
        for family in self._scraped().collect():
            for sample in family.samples:
                if (sample.labels.get("model"), sample.labels.get("version")) != (name, version):
                    continue
                if sample.name == "mmserve_requests_total":
                    outcome = "answered" if int(sample.labels["code"]) < 400 else "failed"
                    figures[outcome] += sample.value
                elif sample.name in wanted:
                    figures[wanted[sample.name]] += sample.value
        return figures

    def _scraped(self) -> CollectorRegistry:
        """This process's registry or, with several processes, one adding them all up."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in self._live:
            registry.register(collector)
        return registry


class _LoadedCollector(Collector):
    """Models loaded in memory: of the process scraped (each server process has its own)."""

    def __init__(self, loaded: Callable[[], int]):
        self.loaded = loaded

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("mmserve_models_loaded", "Models loaded in memory.", self.loaded())


class _JobsCollector(Collector):
    def __init__(self, queue: Any):
        self.queue = queue

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only (Redis may be away at start)

    def collect(self) -> Iterator[Metric]:
        try:
            depth, age, counters = self.queue.depth(), self.queue.age(), self.queue.counters()
        except Exception:  # the broker is away: no job figures this scrape
            return
        yield GaugeMetricFamily("mmserve_jobs_queued", "Job messages waiting in the queue.", depth)
        yield GaugeMetricFamily(
            "mmserve_jobs_queue_age_seconds",
            "How long the oldest message waiting in the queue has waited (0: none waits).",
            age,
        )
        finished = CounterMetricFamily(
            "mmserve_jobs_finished",
            "Jobs finished, by status and kind of error.",
            labels=["status", "kind"],
        )
        finished.add_metric(["succeeded", ""], counters.get("succeeded", 0))
        for field, value in counters.items():
            if field.startswith("failed:"):
                finished.add_metric(["failed", field.removeprefix("failed:")], value)
        yield finished
        yield CounterMetricFamily(
            "mmserve_job_retries",
            "Job runs retried after a transient error.",
            counters.get("retries", 0),
        )
        yield from _batch_runs(counters)
        buckets = [(str(bound), counters.get(f"latency_le:{bound}", 0)) for bound in JOB_BUCKETS]
        count = counters.get("latency_count", 0)
        yield HistogramMetricFamily(
            "mmserve_job_seconds",
            "Time from submit to finish of a job.",
            buckets=[*buckets, ("+Inf", count)],
            sum_value=counters.get("latency_sum", 0),
        )


def _batch_runs(counters: dict[str, float]) -> Iterator[Metric]:
    """The outcomes of the batch runs workers (or, without a broker, this server) wrote:
    those started over HTTP or by a schedule (``mmserve batch run`` counts nowhere)."""
    runs = CounterMetricFamily(
        "mmserve_batch_runs", "Batch runs finished, by status.", labels=["status"]
    )
    for status in ("succeeded", "failed"):
        runs.add_metric([status], counters.get(f"batch_runs:{status}", 0))
    yield runs
    yield CounterMetricFamily(
        "mmserve_batch_rows",
        "Rows scored by the batch runs that succeeded.",
        counters.get("batch_rows", 0),
    )
    yield CounterMetricFamily(
        "mmserve_batch_rejected_rows",
        "Rows the batch runs that succeeded set aside as rejects.",
        counters.get("batch_rejected_rows", 0),
    )
