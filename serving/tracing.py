"""Traces of every mode, when ``MMSERVE_OPENTELEMETRY`` is on.

A request over HTTP is a server span (FastAPI's own, or the fast lane's with the same
attributes); an async job's submit keeps its trace context (W3C ``traceparent``) in the job's
record, and the worker that runs the job continues that trace; a batch part and a stream
micro-batch are a span each. The spans of a model's work say which model and how many rows:

    mmserve.model     the model's name (a chain's: its steps', ``prep,fraud``)
    mmserve.version   its version (a chain's: ``1,7``)
    mmserve.rows      the rows scored

Off (the default), callers get no tracer and skip their spans: nothing here runs.

On, spans go to the process's tracer provider if one is configured already
(``opentelemetry-instrument``, an application's own), else to one made here as the standard
variables say, so that pointing a process at a collector is a matter of environment:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; OTLP over HTTP,
``http://localhost:4318`` by default), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_EXPORTER``
(``otlp``, ``console`` or ``none``), ``OTEL_SERVICE_NAME`` (``mmserve`` by default),
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_SDK_DISABLED``. The SDK and the exporter are
the extra ``mmserve[otel]``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, Tracer

import serving
from serving import scorers
from serving.errors import MissingPackage
from serving.settings import Settings

MODEL = "mmserve.model"
VERSION = "mmserve.version"
ROWS = "mmserve.rows"
JOB = "mmserve.job.id"


def tracer(settings: Settings) -> Tracer | None:
    """mmserve's tracer when ``settings.opentelemetry`` is on (the SDK set up first, once a
    process, unless something else did); ``None`` when off."""
    return _tracer() if settings.opentelemetry else None


def model_attributes(model: str, version: str | int, rows: int | None = None) -> dict[str, Any]:
    """The attributes that say which model, and how many rows (when known)."""
    attributes: dict[str, Any] = {MODEL: model, VERSION: str(version)}
    if rows is not None:
        attributes[ROWS] = rows
    return attributes


def pinned(ref: str, rows: int | None = None) -> dict[str, Any]:
    """:func:`model_attributes` of a pinned reference (``fraud:7``, ``prep:1,fraud:7``)."""
    return model_attributes(*scorers.labels(ref), rows)


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``), to keep
    with work another process will do."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def continued(headers: Mapping[str, str]) -> context.Context:
    """The trace context :func:`carrier` kept (an empty one starts a new trace)."""
    return propagate.extract(headers)


@contextlib.contextmanager
def within(headers: Mapping[str, str]) -> Iterator[None]:
    """The trace context :func:`carrier` kept made current meanwhile: what another process
    does for this one joins its trace."""
    token = context.attach(continued(headers))
    try:
        yield
    finally:
        context.detach(token)


def span(
    tracer: Tracer | None, name: str, **options: Any
) -> contextlib.AbstractContextManager[Span | None]:
    """``tracer``'s span ``name``, current meanwhile; with no tracer (off), nothing."""
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, **options)


def flush() -> None:
    """Export the spans still buffered: before a process that skips its exit hooks ends (a
    Celery or multiprocessing child)."""
    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush()


def note_rows(rows: int) -> None:
    """Say on the current span how many rows were scored (nothing without one)."""
    trace.get_current_span().set_attribute(ROWS, rows)


@functools.cache
def _tracer() -> Tracer:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _configure()
    return trace.get_tracer("mmserve", serving.__version__)


def _configure() -> None:
    """The process's tracer provider, from the standard OTEL_* variables (read by the SDK
    and its exporter themselves, but for the choice of exporter)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        remedy = "pip install 'mmserve[otel]'"
        raise MissingPackage("MMSERVE_OPENTELEMETRY", "extra", "otel", remedy) from None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "mmserve"}))
    provider = TracerProvider(resource=resource)
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _exporters() -> list[Any]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (``otlp`` by default)."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().replace(" ", "").split(",")
    exporters: list[Any] = []
    for name in dict.fromkeys(n for n in names if n and n != "none"):
        if name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                remedy = "pip install 'mmserve[otel]'"
                raise MissingPackage("OTEL_TRACES_EXPORTER=otlp", "extra", "otel", remedy) from None
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: mmserve knows otlp, console, none")
    return exporters
