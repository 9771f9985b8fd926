"""Traces across modes (``MMSERVE_OPENTELEMETRY``): a real ``mmserve serve`` and a real
``mmserve worker``, configured by the standard ``OTEL_*`` variables only, export over OTLP/HTTP
to a collector in this test (the protobuf decoded by ``opentelemetry-proto``). A fast-lane
predict is a server span with the model, version and rows, under the ``traceparent`` the
client sent; an async job's worker span is a child of its submit's span, in the client's
trace; a batch run is a span, and each of its parts is one in its trace, on any worker. In
this process, with the SDK's in-memory exporter: a server under uvicorn without a broker,
whose own job threads continue their submits' traces, and a stream consumer's micro-batches."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import redis
import uvicorn
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from serving.http.app import create_app
from serving.registry import Registry
from serving.settings import Settings, StreamSettings
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import dataset
from tests.services import free_port, mmserve_process, mmserve_worker, redis_server
from tests.workers.streams import fields, produce
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"  # the client's span: the parent it names in traceparent
ADMIN = {"Authorization": "Bearer admin-secret"}
SERVER, PRODUCER, CONSUMER = 2, 4, 5  # OTLP's span kinds


@dataclass(frozen=True)
class Span:
    """A span as a collector received it."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.port = free_port()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                collector.received(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans += [
                    Span(
                        str(resource["service.name"]),
                        s.name,
                        s.kind,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        {a.key: _value(a.value) for a in s.attributes},
                    )
                    for s in scope_spans.spans
                ]

    def wait(self, check: Callable[[Span], bool], count: int = 1) -> list[Span]:
        """The spans that pass ``check``, once there are ``count`` (exported every 50 ms)."""
        deadline = time.monotonic() + 20
        while len(found := [s for s in list(self.spans) if check(s)]) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} spans"
            time.sleep(0.02)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


@dataclass
class Stack:
    client: httpx.Client
    collector: Collector
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("traces")
    store = Store.from_url(str(tmp / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    pq.write_table(dataset(200), tmp / "in.parquet", row_group_size=100)
    collector = Collector()
    env = {
        "MMSERVE_STORE_URL": store.url,
        "MMSERVE_ADMIN_TOKEN": "admin-secret",
        "MMSERVE_BATCH__ROOTS": f'["{tmp}"]',
        "MMSERVE_OPENTELEMETRY": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    with contextlib.ExitStack() as started:
        started.callback(collector.close)
        env["MMSERVE_BROKER_URL"] = started.enter_context(redis_server()).url
        worker_env = {**env, "OTEL_SERVICE_NAME": "mmserve-worker"}
        # Two slots: a distributed batch run's own task, and its parts' (threads: one
        # process to start, not a parent and two children).
        worker = mmserve_worker(
            worker_env, str(tmp / "worker.log"), "--pool", "threads", "--concurrency", "2"
        )
        with ThreadPoolExecutor(2) as pool:  # the two start side by side
            processes = [
                pool.submit(started.enter_context, cm) for cm in (mmserve_process(env), worker)
            ]
            url, _ = processes[0].result()
            processes[1].result()
        client = started.enter_context(httpx.Client(base_url=url, timeout=30))
        yield Stack(client, collector, tmp)


def traceparent(parent: str = CALLER) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE}-{parent}-01"}


@pytest.mark.slow
def test_a_fast_lane_predict_is_a_server_span_under_the_callers_traceparent(stack: Stack) -> None:
    body = {"instances": [[0.5, -1.25, 2.0, 0.0, 3.5], [1.0, 0.0, 0.0, 0.0, 0.0]]}
    answer = stack.client.post("/v1/models/lr:predict", json=body, headers=traceparent())
    assert answer.status_code == 200, answer.text
    route = "/v1/models/{ref}:predict"
    (span,) = stack.collector.wait(lambda s: s.trace_id == TRACE and s.name == f"POST {route}")
    assert (span.service, span.kind, span.parent) == ("mmserve", SERVER, CALLER)
    assert span.attributes == {
        "url.scheme": "http",
        "http.request.method": "POST",
        "http.route": route,
        "url.path": "/v1/models/lr:predict",
        "network.protocol.version": "1.1",
        "server.address": "127.0.0.1",
        "server.port": int(str(stack.client.base_url).rsplit(":", 1)[1]),
        "http.response.status_code": 200,
        "mmserve.model": "lr",
        "mmserve.version": "1",
        "mmserve.rows": 2,
    }
    # The lane's own: FastAPI's stack, and its operation spans, never saw the request.
    assert not [s for s in stack.collector.spans if s.parent == span.span_id]


@pytest.mark.slow
def test_an_async_jobs_worker_span_is_a_child_of_its_submit_in_the_callers_trace(
    stack: Stack,
) -> None:
    caller = "1111111111111111"
    submitted = stack.client.post(
        "/v1/models/lr/async",
        content="0.5,-1.25,2.0,0.0,3.5\n1,0,0,0,0\n3,3,3,3,3\n",
        headers={"content-type": "text/csv", **traceparent(caller)},
    )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["job_id"]
    assert "trace_context" not in submitted.json()
    done = stack.client.get(f"/v1/jobs/{job}", params={"wait": 20}).json()
    assert done["status"] == "succeeded", done
    (run,) = stack.collector.wait(
        lambda s: s.attributes.get("mmserve.job.id") == job and s.name == "job run"
    )
    (submit,) = stack.collector.wait(
        lambda s: s.attributes.get("mmserve.job.id") == job and s.name == "job submit"
    )
    assert (submit.service, submit.kind) == ("mmserve", PRODUCER)
    assert (run.service, run.kind) == ("mmserve-worker", CONSUMER)
    assert run.trace_id == submit.trace_id == TRACE
    assert run.parent == submit.span_id
    assert run.attributes == {
        "mmserve.model": "lr",
        "mmserve.version": "1",
        "mmserve.rows": 3,
        "mmserve.job.id": job,
        "mmserve.job.attempt": 1,
    }
    assert submit.attributes == {
        "mmserve.model": "lr",
        "mmserve.version": "1",
        "mmserve.job.id": job,
    }
    # The submit's span is the request's (FastAPI's server span, through its operation span).
    (request,) = stack.collector.wait(lambda s: s.trace_id == TRACE and s.parent == caller)
    assert (request.name, request.kind) == ("POST /v1/models/{ref}/async", SERVER)
    chain = {s.span_id: s.parent for s in stack.collector.spans if s.trace_id == TRACE}
    ancestors = [submit.parent]
    while ancestors[-1] in chain:
        ancestors.append(chain[ancestors[-1]])
    assert ancestors[-2:] == [request.span_id, caller]


@pytest.mark.slow
def test_a_distributed_batch_runs_parts_are_spans_in_the_runs_trace(stack: Stack) -> None:
    spec = {"model": "lr", "input": str(stack.tmp / "in.parquet"), "distributed": True,
            "output": str(stack.tmp / "out"), "id_column": "id", "partition_rows": 100}  # fmt: skip
    started = stack.client.post("/v1/batch-jobs", json=spec, headers=ADMIN)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    (run,) = stack.collector.wait(lambda s: s.attributes.get("mmserve.batch.run") == run_id)
    assert (run.service, run.name) == ("mmserve-worker", "batch run")
    assert run.attributes == {
        "mmserve.model": "lr",
        "mmserve.version": "1",
        "mmserve.rows": 200,
        "mmserve.batch.run": run_id,
        "mmserve.batch.parts": 2,
    }
    # Each part a task of its own, sent over the broker with the run's trace context.
    parts = stack.collector.wait(lambda s: s.name == "batch part", count=2)
    by_name = {s.attributes["mmserve.batch.part"]: s for s in parts}
    assert sorted(by_name) == ["part-00000", "part-00001"]
    for name, span in by_name.items():
        assert (span.service, span.trace_id, span.parent) == (
            "mmserve-worker",
            run.trace_id,
            run.span_id,
        )
        assert span.attributes == {
            "mmserve.model": "lr",
            "mmserve.version": "1",
            "mmserve.batch.part": name,
            "mmserve.rows": 100,
            "mmserve.batch.rejected": 0,
        }


def test_a_stream_micro_batch_is_a_span_with_its_model_rows_and_dead_letters(
    tmp_path: Path,
) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    registry.register(fixtures.logistic(), "lr")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    x, _ = fixtures.numeric_data(3)
    events = [{"txn_id": f"t{i}", **fields(row)} for i, row in enumerate(x)]
    events.append({"txn_id": "bad", **fields(x[0]), "f2": "not a number"})
    names = Names("events", "scores", "scores-dlq", "scorers", "c1")
    with (
        redis_server() as server,
        redis.Redis.from_url(server.url, decode_responses=True) as client,
    ):
        settings = StreamSettings(start="0", block_ms=20, id_field="txn_id")
        log = RedisEventLog(client, names, start="0", claim_idle_ms=settings.claim_idle_ms)
        model = LiveModel(registry, "lr", settings.follow)
        tracer = provider.get_tracer("test")
        consumer = Consumer(log, model, settings, source="events", tracer=tracer)
        assert consumer.open(threading.Event())
        produce(client, "events", events)
        assert consumer.step() == 4
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("stream batch", SpanKind.CONSUMER)
    assert dict(span.attributes or {}) == {
        "mmserve.stream.source": "events",
        "mmserve.stream.events": 4,
        "mmserve.model": "lr",
        "mmserve.version": "1",
        "mmserve.rows": 3,
        "mmserve.stream.dead_letters": 1,
    }


def test_in_embedded_mode_the_servers_own_job_thread_continues_the_submits_trace(
    tmp_path: Path,
) -> None:
    """No broker: the server runs its jobs on threads of its own (uvicorn in this process,
    spans to the SDK's in-memory exporter); the record still carries the trace."""
    exporter = InMemorySpanExporter()
    _sdk_provider().add_span_processor(SimpleSpanProcessor(exporter))
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    app = create_app(Settings(store_url=store.url, opentelemetry=True))
    try:
        with _uvicorn(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            submitted = client.post(
                "/v1/models/lr/async",
                content="0.5,-1.25,2.0,0.0,3.5\n",
                headers={"content-type": "text/csv", **traceparent()},
            )
            assert submitted.status_code == 202, submitted.text
            job = submitted.json()["job_id"]
            done = client.get(f"/v1/jobs/{job}", params={"wait": 20}).json()
            assert done["status"] == "succeeded", done
    finally:
        exporter.shutdown()
    spans = {
        s.name: s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE, 16)
    }
    run, submit = spans["job run"], spans["job submit"]
    assert run.parent is not None and run.parent.span_id == submit.context.span_id
    assert dict(run.attributes or {}) == {
        "mmserve.model": "lr",
        "mmserve.version": "1",
        "mmserve.rows": 1,
        "mmserve.job.id": job,
        "mmserve.job.attempt": 1,
    }


def _sdk_provider() -> TracerProvider:
    """This process's tracer provider, an SDK one (set once: OpenTelemetry allows no other)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    return provider


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a thread of this process; its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_off_no_tracer_exists_and_the_fast_lane_takes_its_old_path(tmp_path: Path) -> None:
    app = create_app(Settings(store_url=str(tmp_path / "store")))
    try:
        assert app.state.tracer is None
        assert app.front.tracer is None  # RequestContext calls the lane as before
        assert app.state.jobs.tracer is None
    finally:
        app.state.jobs.queue.close()
