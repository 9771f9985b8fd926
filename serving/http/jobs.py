"""Asynchronous inference: submit a payload, get a token at once, poll it.

- ``POST /v1/models/{ref}/async``: the payload as the body (any format of the real-time
  routes, streamed to the store, up to ``MMSERVE_JOBS__MAX_PAYLOAD_BYTES``), or
  ``{"input_location": ...}`` naming an object already in the store.
- ``GET /v1/jobs/{token}``, ``GET /v1/jobs/{token}/result``, ``DELETE /v1/jobs/{token}``.
  ``GET /v1/jobs/{token}?wait=S`` is a long poll: it answers as soon as the job finished,
  or with its status after ``S`` seconds (at most 20; :mod:`serving.http._waits`).
- ``POST /endpoints/{name}/async-invocations``: SageMaker's asynchronous invocation, of
  the endpoint ``name`` (the variant drawn for it) if there is one, else of the model.

``{ref}`` may be a chain, ``prep:1,fraud@production``: every step's version is pinned at
submit, and the job is scored by the steps in turn (as a pipeline variant's jobs are).

Where a job's input, answer and failure are is answered as absolute URIs (``s3://…``, or
``file:///…`` on a local store), and an input location is taken as a key, such a URI or an
absolute path, only inside the store (:meth:`serving.store.Store.key_of`). An input named by
its location is read in the format declared, else its name's suffix says, else CSV; and
without ``accept`` the answer is in the input's format.

The answer keeps input columns as a batch run's does: ``id_column`` first, then
``keep_columns``, copied as read (the pointer's fields, the headers ``X-MMServe-Id-Column``
and ``X-MMServe-Keep-Columns: a,b``, or SageMaker's custom attributes
``id_column=customer_id; keep_columns=a,b``); a CSV answer has a header row naming its
columns unless its input is CSV without one.

An ``Idempotency-Key`` (SageMaker's inference id) belongs to the credential that sent it and
to one request: sent again with the same request it answers the first job; with another
model, body, input location, format, callback or limit it is a 409 naming the key.

A 202 is sent only once the input and the job record are in the store. The record is
written before the message is published (an outbox): when the queue is away, the client
gets 503, the record says why, and the sweep enqueues the job when the queue is back.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry.trace import SpanKind, Tracer
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import URLPath

from serving import codecs, scorers, tracing
from serving.codecs import DecodeError, media_type, media_type_of, raw, sagemaker
from serving.endpoints.pipeline import inputs_of
from serving.errors import (
    EndpointNotFound,
    InvalidName,
    JobNotReady,
    PayloadTooLarge,
    QueueUnavailable,
    UnsupportedFormat,
)
from serving.http._auth import credential
from serving.http._body import invalid_body
from serving.http._endpoints import TARGET_HEADERS
from serving.http._waits import Waits
from workers.jobs import Job, JobError, Status, key, new_token, now, valid_token
from workers.notify import check_url
from workers.runner import Runner

router = APIRouter(tags=["async"])

SAGEMAKER = "x-amzn-sagemaker-"
_POINTER_BYTES = 64 * 1024  # a JSON body this small may be {"input_location": ...}
_SMALL_BYTES = 64 * 1024  # a body this small is read whole, then stored in one write
MAX_WAIT_S = 20.0  # longest long poll of a job's status (SQS's longest receive wait)
_CHUNK = 1024 * 1024
_MAX_KEY = 256  # characters of an idempotency key (SageMaker's inference ids: 64)
_SAGEMAKER_TTL_S = 6 * 3600  # SageMaker's default and longest RequestTTLSeconds
_CANCELLED = JobError(type="Cancelled", message="cancelled by the client")


@router.post("/v1/models/{ref}/async", status_code=202, summary="Submit an asynchronous job")
async def submit(ref: str, request: Request) -> Response:
    """Store the payload (the body, or the object ``{"input_location": ...}`` names) and queue
    a job for it; answers 202 with the job's token and where its answer will be."""
    return await submit_as(ref, ref, request)


async def submit_as(ref: str, named: str, request: Request) -> Response:
    """:func:`submit` of ``ref`` for a caller who named ``named`` (an endpoint, whose drawn
    variant may differ between two sends of one idempotent request)."""
    runner = _runner(request)
    headers = request.headers
    kind = raw.content_type(headers.get("content-type"), codecs.JSON, sagemaker.ACCEPTED)
    pointer = await _pointer(request) if kind == codecs.JSON else None
    given = pointer or InputPointer(input_location="-")
    input_key = None
    if pointer is not None:
        input_key = runner.store.key_of(pointer.input_location, "input_location")
        kind = _input_format(pointer.content_type, input_key)
    answer = _answer_format(given.accept or headers.get("accept"), kind)
    idempotency_key = given.idempotency_key or headers.get("idempotency-key")
    callback = _callback(given.callback_url, "callback_url") or _callback(
        headers.get("x-callback-url"), "X-Callback-Url"
    )
    job = _new_job(request, ref, kind, answer, callback, idempotency_key)
    job.id_column, job.keep_columns = _kept(headers, given)
    if input_key is not None:
        job.input_key = input_key
    asked = {"model": named, "variant": _pinned(headers)}
    job = await _accept(runner, job, request, pointer is None, asked)
    view = _view(request, runner, job)
    return JSONResponse(view, status_code=202, headers={"Location": view["status_url"]})


@router.post(
    "/endpoints/{name}/async-invocations",
    status_code=202,
    summary="Invoke asynchronously (SageMaker)",
)
async def async_invocations(name: str, request: Request) -> Response:
    """SageMaker's InvokeEndpointAsync: the input is already in the store; the output and
    failure locations are known before the job runs (a client may poll the store)."""
    runner, headers = _runner(request), request.headers
    input_location = headers.get(f"{SAGEMAKER}inputlocation")
    if not input_location:
        raise DecodeError("request", "the header X-Amzn-SageMaker-InputLocation is required")
    input_key = runner.store.key_of(input_location, "X-Amzn-SageMaker-InputLocation")
    kind = _input_format(headers.get(f"{SAGEMAKER}content-type"), input_key)
    answer = media_type(headers.get(f"{SAGEMAKER}accept"), kind, sagemaker.ACCEPTED)
    inference_id = headers.get(f"{SAGEMAKER}inference-id") or str(uuid.uuid4())
    ref, variant = await _target(request, name)
    job = _new_job(request, ref, kind, answer, None, inference_id)
    job.input_key = input_key
    job.id_column, job.keep_columns = _kept(headers, None)
    ttl = _seconds(headers, "requestttlseconds", 60, _SAGEMAKER_TTL_S) or _SAGEMAKER_TTL_S
    job.expires_at = job.created_at + timedelta(seconds=ttl)
    limit = runner.settings.time_limit_s
    job.time_limit_s = _seconds(headers, "invocationtimeoutseconds", 1, limit) or limit
    asked = {"model": name, "variant": _pinned(headers), "ttl_s": str(ttl)}
    job = await _accept(runner, job, request, False, asked)
    output = runner.store.uri(job.output_key)
    answered = {
        "X-Amzn-SageMaker-OutputLocation": output,
        "X-Amzn-SageMaker-FailureLocation": runner.store.uri(job.error_key),
        "Location": _status_url(request, job.id),
    }
    if variant is not None:
        answered |= {"X-Amzn-Invoked-Production-Variant": variant, "X-MMServe-Variant": variant}
    body = {"InferenceId": inference_id, "OutputLocation": output}
    return JSONResponse(body, status_code=202, headers=answered)


async def _target(request: Request, name: str) -> tuple[str, str | None]:
    """What SageMaker's endpoint ``name`` is here: an endpoint (the model, or the chain of
    a pipeline variant, drawn for this request, and that variant), else the model so named."""
    try:
        _, variant, refs = await request.app.state.endpoints.choose(name, request.headers)
    except EndpointNotFound:
        return name, None
    return scorers.join(refs), variant.name


@router.get("/v1/jobs/{token}", summary="A job's status")
async def status(
    token: str,
    request: Request,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Seconds to wait for the job to finish (a long poll): the answer comes "
            "as soon as it finished, else with its status after that long",
        ),
    ] = 0,
) -> dict[str, Any]:
    """The job's record; with ``wait``, once it finished (or after ``wait`` seconds)."""
    runner = _runner(request)
    token = valid_token(token)
    if wait > 0:
        read = functools.partial(run_in_threadpool, runner.jobs.get, token)
        job = await _waits(request, runner).until_finished(token, wait, read)
    else:
        job = await run_in_threadpool(runner.jobs.get, token)
    return _view(request, runner, job)


@router.get("/v1/jobs/{token}/result", summary="A job's answer")
async def result(token: str, request: Request) -> Response:
    """The answer of a job that succeeded, streamed from the store, in the format asked for
    at submit (``Accept`` then; the store object a client may read itself is the same)."""
    runner = _runner(request)
    job = await run_in_threadpool(runner.jobs.get, valid_token(token))
    if job.status is not Status.SUCCEEDED:
        wanted = "its result exists once it succeeded"
        if job.error is not None:
            wanted = f"it failed ({job.error.type}: {job.error.message})"
        raise JobNotReady(job.id, job.status.value, wanted)
    chunks = await run_in_threadpool(runner.store.stream, job.output_key)
    return StreamingResponse(iterate_in_threadpool(chunks), media_type=job.output_type)


@router.delete("/v1/jobs/{token}", summary="Cancel a queued job")
async def cancel(token: str, request: Request) -> dict[str, Any]:
    runner = _runner(request)

    def cancelled(job: Job) -> Job:
        if job.status is not Status.QUEUED:
            raise JobNotReady(job.id, job.status.value, "only a queued job can be cancelled")
        return job.finish(Status.CANCELLED, _CANCELLED)

    job = await run_in_threadpool(runner.jobs.update, valid_token(token), cancelled)
    with contextlib.suppress(Exception):  # a hint to long polls, which read the record anyway
        await run_in_threadpool(runner.queue.finished, job, {})
    return _view(request, runner, job)


# -- submitting ------------------------------------------------------------------------------


def _runner(request: Request) -> Runner:
    runner: Runner = request.app.state.jobs
    return runner


def _waits(request: Request, runner: Runner) -> Waits:
    """The app's long polls (made on the first, with the queue's subscription)."""
    state = request.app.state
    waits: Waits | None = getattr(state, "job_waits", None)
    if waits is None:
        waits = state.job_waits = Waits(runner.queue)
    return waits


def _new_job(
    request: Request,
    ref: str,
    kind: str,
    answer: str,
    callback: str | None,
    idempotency_key: str | None,
) -> Job:
    if idempotency_key is not None and len(idempotency_key) > _MAX_KEY:
        rule = f"use at most {_MAX_KEY} characters"
        raise InvalidName("idempotency key", idempotency_key[:64] + "...", rule)
    token = new_token()
    return Job(
        id=token,
        model=ref,
        requested=ref,
        content_type=kind,
        accept=answer,
        input_key=key(token, "input"),
        created_at=now(),
        time_limit_s=_runner(request).settings.time_limit_s,
        callback_url=callback,
        idempotency_key=idempotency_key or None,
    )


async def _accept(
    runner: Runner, job: Job, request: Request, upload: bool, asked: dict[str, str]
) -> Job:
    """Pin the model version (each step's, for a chain), store the input (the body, if
    ``upload``) and the record, publish; the job submitted earlier with the same idempotency
    key by the same credential, if that was the same request (``asked``, and the input).
    With tracing on, in the job's submit span, whose context the record keeps: the worker's
    span continues it."""
    tracer: Tracer | None = request.app.state.tracer
    if tracer is None:
        return await _accepted(runner, job, request, upload, asked)
    with tracer.start_as_current_span("job submit", kind=SpanKind.PRODUCER) as span:
        job.trace_context = tracing.carrier()
        job = await _accepted(runner, job, request, upload, asked)
        span.set_attributes({**tracing.pinned(job.model), tracing.JOB: job.id})
        return job


async def _accepted(
    runner: Runner, job: Job, request: Request, upload: bool, asked: dict[str, str]
) -> Job:
    who = credential(request.scope["headers"], request.app.state.settings)
    if upload and (body := await _small_body(request, runner)) is not None:
        # A small body, read here: the rest is one hop off the loop, not one a step.
        return await run_in_threadpool(_accept_small, runner, job, body, asked, who)
    await run_in_threadpool(_pin, runner, job)
    if upload:
        asked = {**asked, "body": await _upload(request, runner, job.input_key, job.content_type)}
    elif await run_in_threadpool(runner.store.exists, job.input_key):
        asked = {**asked, "input_location": job.input_key}
    else:
        raise DecodeError("request", f"no object at the input location {job.input_key!r}")
    return await run_in_threadpool(_record, runner, job, upload, asked, who)


def _accept_small(runner: Runner, job: Job, body: bytes, asked: dict[str, str], who: str) -> Job:
    """:func:`_accept` of a body already read whole (small), in one call."""
    _pin(runner, job)
    if not body:
        raise DecodeError("request", "the body is empty")
    runner.store.write(job.input_key, body, content_type=job.content_type)
    asked = {**asked, "body": hashlib.sha256(body).hexdigest()}
    return _record(runner, job, True, asked, who)


def _pin(runner: Runner, job: Job) -> None:
    """Pin the job's model version (each step's, for a chain); a file is refused now if no
    model takes it."""
    job.model = scorers.pin(runner.registry, job.requested)
    if job.content_type not in sagemaker.ACCEPTED:
        versions = [runner.registry.get(step) for step in scorers.steps(job.model)]
        raw.check(job.content_type, inputs_of(versions))


def _record(runner: Runner, job: Job, uploaded: bool, asked: dict[str, str], who: str) -> Job:
    """Store the record of a job whose input is stored, and publish it: the job, or the one
    submitted first with its idempotency key (for the same request)."""
    if job.idempotency_key is not None:
        first = _claim(runner, job, uploaded, asked, who)
        if first != job.id:
            return runner.jobs.get(first)
    runner.jobs.create(job)
    try:
        runner.queue.enqueue(job)
    except QueueUnavailable as err:
        update = {"queue_error": str(err.__cause__ or err)}
        runner.jobs.update(job.id, lambda j: j.model_copy(update=update))
        raise
    return job


def _claim(runner: Runner, job: Job, uploaded: bool, asked: dict[str, str], who: str) -> str:
    """The job that holds ``job``'s idempotency key for the caller's credential (``who``):
    ``job``'s own token if it is the first; the earlier job's for the same request (the
    input just uploaded is then dropped); :class:`IdempotencyConflict` for another request."""
    asked |= {
        "content_type": job.content_type,
        "accept": job.accept,
        "callback_url": job.callback_url or "",
        "time_limit_s": str(job.time_limit_s),
    }
    if job.passthrough:  # absent otherwise: a key claimed before columns were kept still holds
        asked["passthrough"] = json.dumps(job.passthrough)
    first = ""
    try:
        first = runner.jobs.claim_key(who, str(job.idempotency_key), job.id, asked)
    finally:
        if uploaded and first != job.id:
            runner.store.delete(job.input_key)
    return first


def _pinned(headers: Any) -> str:
    """The variant a request pins (an endpoint's), or ``""``."""
    return next((str(headers[h]) for h in TARGET_HEADERS if headers.get(h)), "")


class InputPointer(BaseModel):
    """A JSON body that names the job's input instead of being it."""

    input_location: str = Field(
        min_length=1,
        description="A key, or a URI in the store (s3://bucket/prefix/key, file:///path/key)",
    )
    content_type: str | None = Field(
        None, description="The input's media type; default: by its suffix, else text/csv"
    )
    accept: str | None = Field(None, description="The answer's media type; default: the input's")
    callback_url: str | None = None
    idempotency_key: str | None = None
    id_column: str | None = Field(None, description="Input column copied to every answer row")
    keep_columns: list[str] = Field([], description="More input columns copied to the answer")


async def _pointer(request: Request) -> InputPointer | None:
    """A small JSON body that names its input (``input_location``) instead of being it;
    ``None`` for any other body (left unread, to be streamed)."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > _POINTER_BYTES:
        return None
    body = await request.body()  # small: cached, and streamed from the cache by _upload
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the worker reports that, as for any bad payload
    if not (isinstance(document, dict) and "input_location" in document):
        return None
    try:
        return InputPointer.model_validate(document)
    except ValidationError as err:
        raise invalid_body(err) from None


def _input_format(declared: str | None, input_key: str) -> str:
    """The format of an input already in the store: as declared (a table format, or a
    file's media type), else as its name's suffix says (``rows.parquet``), else CSV
    (SageMaker's default)."""
    if declared:
        return raw.content_type(declared, codecs.CSV, sagemaker.ACCEPTED)
    try:
        return media_type_of(Path(input_key))
    except UnsupportedFormat:
        return codecs.CSV


def _answer_format(accept: str | None, kind: str) -> str:
    """The answer's format: a table format (the input's by default); for a file or a text
    (an input of no table format) also a file's media type, or ``*/*`` by default: the
    model's one binary output as it is if it has one of a declared type (``image/png``),
    else JSON (:meth:`workers.runner.Runner._score`)."""
    if kind in sagemaker.ACCEPTED:
        return media_type(accept, kind, sagemaker.ACCEPTED)
    return raw.content_type(accept, "*/*", sagemaker.ACCEPTED)


def _kept(headers: Any, pointer: InputPointer | None) -> tuple[str | None, list[str]]:
    """The input columns the answer keeps (``id_column``, ``keep_columns``): the pointer's,
    else the ``X-MMServe-*`` headers', else SageMaker's custom attributes (what boto3 sends
    as ``CustomAttributes``: ``id_column=customer_id; keep_columns=a,b``)."""
    custom = headers.get(f"{SAGEMAKER}custom-attributes", "").split(";")
    pairs = (part.partition("=") for part in custom)
    attributes = {name.strip().lower(): value.strip() for name, _, value in pairs}
    id_column = (
        (pointer.id_column if pointer else None)
        or headers.get("x-mmserve-id-column")
        or attributes.get("id_column")
        or None
    )
    listed = headers.get("x-mmserve-keep-columns") or attributes.get("keep_columns") or ""
    keep = (pointer.keep_columns if pointer else None) or listed.split(",")
    return id_column, [name.strip() for name in keep if name.strip()]


def _callback(url: str | None, field: str) -> str | None:
    """A callback URL checked as far as it can be before the job runs (the addresses it
    may reach are checked when it is called, on what its host resolves to then)."""
    if url is None:
        return None
    if (problem := check_url(url)) is not None:
        raise InvalidName(f"callback URL ({field})", url, problem)
    return url


def _seconds(headers: Any, name: str, low: int, high: float) -> int | None:
    value = headers.get(f"{SAGEMAKER}{name}")
    if value is None:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        rule = f"must be {low} to {int(high)} seconds"
        raise DecodeError("request", f"X-Amzn-SageMaker-{name} {rule}")
    return int(value)


async def _small_body(request: Request, runner: Runner) -> bytes | None:
    """The whole body, if its declared length is at most :data:`_SMALL_BYTES` (and the
    limit); ``None`` for a body to stream (:func:`_upload`)."""
    declared = request.headers.get("content-length")
    small = min(_SMALL_BYTES, runner.settings.max_payload_bytes)
    if declared is None or not declared.isdigit() or int(declared) > small:
        return None
    body = await request.body()
    if len(body) > runner.settings.max_payload_bytes:
        raise PayloadTooLarge(runner.settings.max_payload_bytes)
    return body


async def _upload(request: Request, runner: Runner, input_key: str, content_type: str) -> str:
    """Stream the body into the store (with its media type); the object appears only whole,
    and the body is never held whole in memory. 413 as soon as it passes the limit. Returns
    the body's sha256."""
    limit = runner.settings.max_payload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)
    chunks = request.stream().__aiter__()

    def write() -> str:
        size, digest = 0, hashlib.sha256()
        with runner.store.open_output(input_key, content_type=content_type) as out:
            for chunk in _pulled(chunks):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(limit)
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise DecodeError("request", "the body is empty")
        return digest.hexdigest()

    return await anyio.to_thread.run_sync(write)


def _pulled(chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
    """The body's chunks, from a worker thread, joined into writes of about a megabyte."""
    pending: list[bytes] = []
    size = 0
    while True:
        try:
            chunk: bytes = anyio.from_thread.run(chunks.__anext__)  # type: ignore[arg-type]
        except StopAsyncIteration:
            break
        pending.append(chunk)
        size += len(chunk)
        if size >= _CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


# -- answering -------------------------------------------------------------------------------


def _status_url(request: Request, token: str) -> str:
    """What ``request.url_for("status", token=token)`` answers, without its walk through
    every route of the app (a tenth of a submit's time in the API)."""
    return str(URLPath(f"/v1/jobs/{valid_token(token)}").make_absolute_url(request.base_url))


def _view(request: Request, runner: Runner, job: Job) -> dict[str, Any]:
    status_url = _status_url(request, job.id)
    view: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status.value,
        "status_url": status_url,
        "result_url": f"{status_url}/result",
        "output_location": runner.store.uri(job.output_key),
        "failure_location": runner.store.uri(job.error_key),
        "input_location": runner.store.uri(job.input_key),
    }
    view |= job.model_dump(
        mode="json",
        exclude={
            "id": True,
            "status": True,
            "input_key": True,
            "callback_url": True,
            "notification": {"detail"},  # may name addresses inside the deployment
            "trace_context": True,
        },
    )
    return view
