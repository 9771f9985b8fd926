"""The endpoint plane: what the endpoint routes hand a request to.

It picks the variant (weights, or ``X-Target-Variant``), scores the rows through the data
plane (so batching, limits and cold starts apply to every variant and pipeline step),
counts the answer per variant, and, once the response is sent, captures it and sends it
to the shadow as tasks of their own: neither is ever awaited on the response path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from serving.codecs import Rows
from serving.codecs.raw import Raw
from serving.endpoints.capture import Record
from serving.endpoints.catalog import Endpoints, Served
from serving.endpoints.config import NAME_PATTERN, SHADOW, Variant
from serving.endpoints.pipeline import inputs_of, merge, step_named, table_of
from serving.endpoints.split import Splitter
from serving.errors import EndpointNotFound, MMServeError
from serving.http._capture import CaptureWriter
from serving.http._dataplane import DataPlane, Decode, off_loop_if_large
from serving.http._metrics import Metrics
from serving.metadata import Feature
from serving.predictor import Predictor
from serving.settings import Settings

log = logging.getLogger("mmserve.endpoints")
TARGET_HEADERS = ("x-target-variant", "x-amzn-sagemaker-target-variant")
ID_HEADERS = ("x-amzn-sagemaker-inference-id", "x-inference-id")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,256}$")
_NAME = re.compile(NAME_PATTERN)


@dataclass
class Answer:
    """A request an endpoint answered, and what a capture or a shadow needs of it."""

    served: Served
    variant: Variant
    predictors: list[Predictor]
    table: pa.Table
    seconds: float
    load_seconds: float | None
    inference_id: str
    inputs: list[Rows] = field(default_factory=list)

    @property
    def model(self) -> str:
        return ",".join(p.ref for p in self.predictors)

    @property
    def last(self) -> tuple[str, int]:
        version = self.predictors[-1].version
        return version.name, version.version


@dataclass
class VariantStats:
    """This process's figures of one variant (``GET /v1/endpoints/{name}``)."""

    requests: int = 0
    server_errors: int = 0
    client_errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def view(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def at(q: float) -> float | None:
            return (
                round(ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000, 3)
                if ordered
                else None
            )

        return {
            "requests": self.requests,
            "server_errors": self.server_errors,
            "client_errors": self.client_errors,
            "latency_ms": {"p50": at(0.5), "p99": at(0.99)},
        }


class EndpointPlane:
    """Variants, shadows and capture over the one data plane."""

    def __init__(
        self, dataplane: DataPlane, endpoints: Endpoints, settings: Settings, metrics: Metrics
    ):
        self.dataplane = dataplane
        self.endpoints = endpoints
        self.settings = settings
        self.metrics = metrics
        self.splitter = Splitter(settings.deployment.seed)
        self.capture = CaptureWriter(endpoints.store, settings.deployment, metrics)
        self.snapshot: dict[str, Served] = {}
        self.stats: dict[tuple[str, str], VariantStats] = {}
        self.shadows: set[asyncio.Task[None]] = set()
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    async def served(self, name: str) -> Served:
        """The endpoint as this server follows it; one not seen yet is read from the store."""
        served = self.snapshot.get(name)
        if served is None:
            if not _NAME.match(name):  # never a store key from a bad name
                raise EndpointNotFound(name, sorted(self.snapshot))
            served = self.snapshot[name] = await asyncio.to_thread(self.endpoints.served, name)
        return served

    async def choose(self, name: str, headers: Any) -> tuple[Served, Variant, list[str]]:
        """The endpoint, the variant this request goes to, and the models that serve it."""
        served = await self.served(name)
        target = next((headers[h] for h in TARGET_HEADERS if headers.get(h)), None)
        variant = self.splitter.choose(served, target)
        return served, variant, self.splitter.steps(served, variant)

    async def invoke(
        self,
        served: Served,
        variant: Variant,
        refs: list[str],
        headers: Any,
        decode: Decode,
        body_bytes: int,
    ) -> Answer:
        """Score the request's rows with ``variant`` (its models ``refs``)."""
        kept: list[Rows] = []

        def keeping(features: list[Feature]) -> Rows:
            rows = decode(features)
            kept.append(rows)
            return rows

        started = time.perf_counter()
        try:
            predictors, table, load_seconds = await self._score(refs, keeping, body_bytes)
        except MMServeError as err:
            self._count(
                served.name, variant.name, self.label(refs), err, time.perf_counter() - started
            )
            raise
        seconds = time.perf_counter() - started
        answer = Answer(
            served, variant, predictors, table, seconds, load_seconds, _inference_id(headers), kept
        )
        self._count(served.name, variant.name, answer.model, None, seconds)
        return answer

    async def _score(
        self, refs: list[str], decode: Decode, body_bytes: int
    ) -> tuple[list[Predictor], pa.Table, float | None]:
        if len(refs) == 1:
            scored = await self.dataplane.predict(refs[0], decode, body_bytes)
            return [scored.predictor], scored.table, scored.load_seconds
        loaded = [await self.dataplane.predictor(ref) for ref in refs]
        predictors = [p for p, _ in loaded]
        waits = [s for _, s in loaded if s is not None]
        versions = [p.version for p in predictors]
        rows = await off_loop_if_large(body_bytes, decode, inputs_of(versions))
        current = table_of(rows, versions)
        for number, predictor in enumerate(predictors[:-1], 1):
            with step_named(number, predictor.ref):
                step = await self.dataplane.predict(predictor.ref, _given(current), body_bytes)
            current = merge(current, step.table)
        with step_named(len(predictors), predictors[-1].ref):
            last = await self.dataplane.predict(predictors[-1].ref, _given(current), body_bytes)
        return predictors, last.table, sum(waits) if waits else None

    def label(self, refs: list[str]) -> str:
        """``refs`` pinned to versions where this server knows them (a failed request)."""
        pinned = []
        for ref in refs:
            key = self.dataplane.registry.resolved(ref)
            pinned.append(f"{key[0]}:{key[1]}" if key is not None else ref)
        return ",".join(pinned)

    def _count(
        self, endpoint: str, variant: str, model: str, err: MMServeError | None, seconds: float
    ) -> None:
        outcome = "ok" if err is None else "server_error" if err.status >= 500 else "client_error"
        key = (endpoint, variant, model, outcome)
        children = self._children.get(key)
        if children is None:  # labels() costs more than the count: keep its children
            latency = self.metrics.endpoint_latency.labels(*key[:3])
            children = self._children[key] = (self.metrics.endpoint_requests.labels(*key), latency)
        children[0].inc()
        stats = self.stats.setdefault((endpoint, variant), VariantStats())
        stats.requests += 1
        stats.server_errors += outcome == "server_error"
        stats.client_errors += outcome == "client_error"
        if err is None:
            children[1].observe(seconds)
            stats.latencies.append(seconds)

    # -- after the response ----------------------------------------------------------------

    def after(self, answer: Answer, decode: Decode, body_bytes: int) -> None:
        """Capture the answer and start the shadow (called once the response is sent)."""
        try:
            self._after(answer, decode, body_bytes)
        except Exception:  # nothing here may fail a request that was answered
            log.exception("capture or shadow of endpoint %s failed", answer.served.name)

    def _after(self, answer: Answer, decode: Decode, body_bytes: int) -> None:
        served, config = answer.served, answer.served.config
        shadow = config.shadow
        shadowed = shadow is not None and self.splitter.sampled(served, shadow.sample)
        sampled = config.capture is not None and self.splitter.sampled(
            served, config.capture.sample
        )
        captured = sampled or (shadowed and shadow is not None and shadow.capture)
        if captured and answer.inputs:
            self.capture.add(
                self._record(
                    answer,
                    answer.variant.name,
                    "primary",
                    answer.model,
                    answer.seconds,
                    answer.inputs[0],
                    answer.table,
                )
            )
        if shadow is None or not shadowed:
            return
        if len(self.shadows) >= self.settings.deployment.max_shadows:
            self.metrics.shadow_requests.labels(served.name, shadow.model, "skipped").inc()
            return
        task = asyncio.create_task(self._shadow(answer, shadow.model, decode, body_bytes, captured))
        self.shadows.add(task)
        task.add_done_callback(self.shadows.discard)

    async def _shadow(
        self, answer: Answer, ref: str, decode: Decode, body_bytes: int, captured: bool
    ) -> None:
        """Score the request with the shadow: its answer is counted and captured, never sent."""
        name = answer.served.name
        kept: list[Rows] = []

        def keeping(features: list[Feature]) -> Rows:
            kept.append(decode(features))
            return kept[-1]

        started = time.perf_counter()
        table: pa.Table | None = None
        error: str | None = None
        try:
            scored = await self.dataplane.predict(ref, keeping, body_bytes)
            model, table = scored.predictor.ref, scored.table
        except Exception as err:  # a shadow's failure is counted, never anyone's answer
            model, error = self.label([ref]), _message(err)
            if not isinstance(err, MMServeError):
                log.exception("shadow %s of endpoint %s failed", ref, name)
        outcome = "ok" if error is None else "error"
        self.metrics.shadow_requests.labels(name, model, outcome).inc()
        if captured and (kept or answer.inputs):
            rows = kept[0] if kept else answer.inputs[0]
            record = self._record(
                answer, SHADOW, "shadow", model, time.perf_counter() - started, rows, table, error
            )
            self.capture.add(record)

    def _record(
        self,
        answer: Answer,
        variant: str,
        role: str,
        model: str,
        seconds: float,
        rows: Rows | Raw,
        table: pa.Table | None,
        error: str | None = None,
    ) -> Record:
        if isinstance(rows, Raw):  # a file or a text: captured as the row the model took
            rows = table_of(rows, [p.version for p in answer.predictors])
        return Record(
            endpoint=answer.served.name,
            variant=variant,
            role=role,
            model=model,
            inference_id=answer.inference_id,
            time=datetime.now(UTC),
            latency_ms=seconds * 1000,
            inputs=rows,
            outputs=table,
            error=error,
        )

    async def drain_shadows(self, seconds: float) -> None:
        """Let the shadows in flight finish (shutdown), for at most ``seconds``."""
        if self.shadows:
            await asyncio.wait(list(self.shadows), timeout=seconds)


def _given(table: pa.Table) -> Decode:
    return lambda _features: table


def _inference_id(headers: Any) -> str:
    for name in ID_HEADERS:
        value = headers.get(name)
        if value and _VALID_ID.match(value):
            return str(value)
    return uuid.uuid4().hex


def _message(err: BaseException) -> str:
    return err.message if isinstance(err, MMServeError) else f"{type(err).__name__}: {err}"
