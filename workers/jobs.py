"""Asynchronous jobs as the store keeps them: the record, its states, and its keys.

Everything a client was promised lives in the store, so a job's state can be rebuilt from
the store alone::

    jobs/<token>/job.json     the record (compare-and-swap updates)
    jobs/<token>/input        the payload, as uploaded
    jobs/<token>/output       the answer, written once (exclusive create)
    jobs/<token>/error.json   why it failed
    jobs/open/<token>         present while the job is not finished: what the sweep walks
    jobs/keys/<sha256>        an idempotency key's job and request (by credential and key)

Tokens are 128 random bits in hex: unguessable, and safe as a key segment.

An idempotency key belongs to the credential that sent it (``admin``, ``api-key``, ``none``):
the same key from another credential is another key. Under it the first job's token is kept
with what its request was (the model named, a hash of the body or the input's location, the
formats...): the same key with another request is :class:`IdempotencyConflict` (409), never
the first job, as in Stripe's and AWS's APIs.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from serving.errors import AlreadyExists, IdempotencyConflict, JobNotFound, ObjectNotFound
from serving.store import Store

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
PREFIX = "jobs"
OPEN = f"{PREFIX}/open"


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class JobError(BaseModel):
    type: str
    message: str


class Notification(BaseModel):
    """How the notification of a finished job to its callback ended."""

    status: Literal["delivered", "failed", "refused"]
    attempts: int
    detail: str
    """The last attempt's outcome. Not shown to the caller: it may name the addresses the
    callback's host resolved to inside the deployment."""


class Job(BaseModel):
    """One job's record (``jobs/<token>/job.json``)."""

    id: str
    model: str
    """The model reference pinned at submit (``name:version``): an alias moved meanwhile
    does not change the answer."""
    requested: str
    """The reference as the client gave it."""
    status: Status = Status.QUEUED
    content_type: str
    accept: str
    input_key: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = None
    """Queued past this, the job fails as expired (SageMaker's RequestTTLSeconds)."""
    time_limit_s: float
    attempts: int = 0
    """Times a worker started running it."""
    lost: int = 0
    """Times a worker died while running it (found by the next delivery)."""
    retries: int = 0
    """Transient errors (store or broker away) retried."""
    error: JobError | None = None
    id_column: str | None = None
    """An input column copied to the front of every answer row (as a batch run's)."""
    keep_columns: list[str] = []
    """More input columns copied to the answer, after ``id_column``."""
    callback_url: str | None = None
    idempotency_key: str | None = None
    notification: Notification | None = None
    """Set once the notification owed to ``callback_url`` was delivered or given up."""
    queue_error: str | None = None
    """Why the queue did not take the job at submit (the sweep enqueues it later)."""
    answered_as: str | None = None
    """The answer's media type, when ``accept`` left it to the model (a file's input, whose
    answer is the model's binary output as it is, ``image/png``, or JSON)."""
    trace_context: dict[str, str] = {}
    """The submit's trace context as W3C headers (``traceparent``...), which the worker's span
    continues: empty unless tracing is on (:mod:`serving.tracing`)."""

    @property
    def output_type(self) -> str:
        """The media type of the answer in the store."""
        return self.answered_as or self.accept

    @property
    def output_key(self) -> str:
        return key(self.id, "output")

    @property
    def error_key(self) -> str:
        return key(self.id, "error.json")

    @property
    def passthrough(self) -> list[str]:
        """The input columns the answer keeps, in order: a batch run's ``id_column`` and
        ``keep_columns`` (:meth:`batch.spec.BatchSpec.passthrough`)."""
        wanted = [self.id_column] if self.id_column else []
        return [*wanted, *(c for c in self.keep_columns if c not in wanted)]

    def finish(self, status: Status, error: JobError | None = None) -> Job:
        return self.model_copy(update={"status": status, "error": error, "finished_at": now()})


def finishing(
    status: Status, error: JobError | None = None, answered_as: str | None = None
) -> Callable[[Job], Job]:
    """An update that finishes a job, unless it is finished already: the first end stands.
    ``answered_as``: the media type of its answer, when it differs from ``accept``."""

    def finish(job: Job) -> Job:
        if job.status.finished:
            return job
        done = job.finish(status, error)
        return done.model_copy(update={"answered_as": answered_as}) if answered_as else done

    return finish


def now() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    return secrets.token_hex(16)


def valid_token(token: str) -> str:
    """``token`` if it is one mmserve could have made; else :class:`JobNotFound` (404)."""
    if not _TOKEN.match(token):
        raise JobNotFound(token)
    return token


def key(token: str, name: str) -> str:
    return f"{PREFIX}/{valid_token(token)}/{name}"


class Jobs:
    """The job records in a store."""

    def __init__(self, store: Store):
        self.store = store

    def create(self, job: Job) -> None:
        """Store a new record (its input already stored), marked open first: an open marker
        without a record is skipped by the sweep, a record without one never swept."""
        self.store.write(f"{OPEN}/{job.id}", b"")
        self.store.create(key(job.id, "job.json"), job.model_dump_json().encode())

    def get(self, token: str) -> Job:
        try:
            data = self.store.read(key(token, "job.json"))
        except ObjectNotFound:
            raise JobNotFound(token) from None
        return Job.model_validate_json(data)

    def update(self, token: str, change: Callable[[Job], Job]) -> Job:
        """Replace the record with ``change(record)``, atomically against other writers;
        a finished job is closed (no longer open)."""

        def apply(current: bytes | None) -> bytes:
            if current is None:
                raise JobNotFound(token)
            return change(Job.model_validate_json(current)).model_dump_json().encode()

        job = Job.model_validate_json(self.store.update(key(token, "job.json"), apply))
        if job.status.finished:
            self.store.delete(f"{OPEN}/{token}")
        return job

    def open_tokens(self) -> list[str]:
        """The jobs not finished (as far as the open markers say)."""
        return [t for t in self.store.list(OPEN) if _TOKEN.match(t)]

    def claim_key(
        self, credential: str, idempotency_key: str, token: str, request: dict[str, str]
    ) -> str:
        """The token of the job ``credential`` submitted first with ``idempotency_key``:
        ``token`` if this is the first; the first one's if it was the same ``request``;
        else :class:`IdempotencyConflict` naming what differs."""
        scoped = json.dumps([credential, idempotency_key]).encode()
        index = f"{PREFIX}/keys/{hashlib.sha256(scoped).hexdigest()}"
        try:
            self.store.create(index, json.dumps({"token": token, "request": request}).encode())
            return token
        except AlreadyExists:
            first = json.loads(self.store.read(index))
        earlier: dict[str, str] = first["request"]
        differing = sorted(
            k for k in request.keys() | earlier.keys() if request.get(k) != earlier.get(k)
        )
        if differing:
            raise IdempotencyConflict(idempotency_key, differing)
        return str(first["token"])
