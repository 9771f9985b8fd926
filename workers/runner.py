"""Running a job, once, whatever the queue does: duplicate deliveries, dead workers, lost
messages.

- A delivery of a finished job does nothing (but send a notification still owed).
- A delivery runs the job only with its lease; a second delivery meanwhile leaves it.
- A delivery that finds the job ``running`` and its lease lapsed knows the last worker
  died with it; after ``max_deliveries`` such deaths the job fails instead of looping.
- The output is created exclusively: two runs write one output, the same bytes.
- Bad payloads and model errors fail the job at once; only transient errors (store or
  broker away) are retried, by the caller (Celery's retry with backoff, or embedded mode's
  sweep), ``retries`` times in all: then the job fails with that error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from serving import codecs, scorers, tracing
from serving.codecs import Matrix, raw, sagemaker
from serving.errors import AlreadyExists, JobNotFound, MMServeError, UnsupportedFormat
from serving.predictor import Scorer
from serving.registry import Registry
from serving.settings import JobSettings
from serving.store import Store
from workers import _job_batches
from workers.jobs import Job, JobError, Jobs, Notification, Status, finishing, now
from workers.notify import Policy, deliver
from workers.queue import Queue, backoff, latency_counts

log = logging.getLogger("mmserve.jobs")

ATTEMPT = "mmserve.job.attempt"

TRANSIENT: tuple[type[BaseException], ...] = (OSError,)
"""Errors worth a retry besides the retryable mmserve errors: connections that failed."""


def transient(err: BaseException) -> bool:
    if isinstance(err, MMServeError):
        return err.retryable
    return isinstance(err, TRANSIENT) or type(err).__module__.startswith(("redis.", "kombu."))


@dataclass
class SweepReport:
    open: int = 0
    enqueued: int = 0
    expired: int = 0
    closed: int = 0


class Runner:
    """Runs jobs from the store; shared by the Celery worker and the embedded queue."""

    def __init__(
        self,
        registry: Registry,
        queue: Queue,
        settings: JobSettings,
        tracer: Tracer | None = None,
    ):
        self.registry = registry
        self.store: Store = registry.store
        self.jobs = Jobs(self.store)
        self.queue = queue
        self.settings = settings
        self.tracer = tracer
        """With tracing on: a job runs in a span of the trace its submit began."""

    # -- one delivery ---------------------------------------------------------------------

    def run(self, token: str) -> Job:
        """Deliver job ``token``: run it unless it is finished or another worker runs it."""
        job = self.jobs.get(token)
        if job.status.finished:
            return self._notify(job)
        lease = self.queue.claim(token)
        if lease is None:
            return job  # a live worker runs it; if that one dies, the sweep hands it out again
        with lease:
            job = self.jobs.update(token, self._started)
            if not job.status.finished:
                job = self._execute(job) if self.tracer is None else self._traced(job)
            if job.status.finished:
                self._counted(job)  # its waiters told before the lease's release, not after
        if job.status.finished:
            job = self._notify(job)
        return job

    def _started(self, job: Job) -> Job:
        if job.status.finished:
            return job  # cancelled or finished meanwhile
        # Running, yet ours to claim: the worker that ran it died.
        lost = job.lost + (job.status is Status.RUNNING)
        if lost >= self.settings.max_deliveries:
            reason = (
                f"its worker died {lost} times while running it (out of memory, or a crash "
                "in the model); not run again"
            )
            return job.model_copy(update={"lost": lost}).finish(
                Status.FAILED, JobError(type="WorkerLost", message=reason)
            )
        if job.status is Status.QUEUED and job.expires_at is not None and now() > job.expires_at:
            return job.finish(Status.FAILED, _expired(job))
        return job.model_copy(
            update={
                "status": Status.RUNNING,
                "lost": lost,
                "attempts": job.attempts + 1,
                "started_at": now(),
            }
        )

    def _execute(self, job: Job) -> Job:
        try:
            answered_as = self._score(job)
        except Exception as err:
            if transient(err) and job.retries < self.settings.retries:  # else: it ends here
                self.jobs.update(job.id, _requeued)
                self.queue.count({"retries": 1})
                raise
            return self.fail(job.id, _error_of(err, job))
        return self.jobs.update(job.id, finishing(Status.SUCCEEDED, answered_as=answered_as))

    def _traced(self, job: Job) -> Job:
        """:meth:`_execute` in the job's span, a child of its submit's (the record keeps
        its context), with the model, version, rows and the job's outcome."""
        assert self.tracer is not None
        attributes = {**tracing.pinned(job.model), tracing.JOB: job.id, ATTEMPT: job.attempts}
        with self.tracer.start_as_current_span(
            "job run",
            context=tracing.continued(job.trace_context),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            job = self._execute(job)
            if job.error is not None:
                span.set_attribute("error.type", job.error.type)
                span.set_status(StatusCode.ERROR, job.error.message)
            return job

    def _score(self, job: Job) -> str | None:
        """Read the input, predict (with the model, or the chain of models, pinned at
        submit), write the output once. A table is read, scored and written a batch at a
        time, as a batch run's (:mod:`workers._job_batches`); anything else whole. Returns
        the answer's media type where ``accept`` left it to the model (a file's job)."""
        scorer = scorers.load(self.registry, job.model)
        if job.content_type not in sagemaker.ACCEPTED:
            return self._score_file(job, scorer)
        with contextlib.suppress(AlreadyExists):  # an earlier run wrote it: the same answer
            if _job_batches.score(self.store, job, scorer, self.settings.batch_rows):
                return None
            features = [f.name for f in scorer.inputs]
            data = self.store.read(job.input_key)
            rows = sagemaker.decode(data, job.content_type, features)
            if job.passthrough and isinstance(rows, Matrix):
                rows = rows.table()  # positional rows: a column to keep is missing, named
            header = not _job_batches.headerless(data, job.content_type, features)
            table = scorer.predict(rows, job.passthrough)
            tracing.note_rows(table.num_rows)
            answer = _job_batches.encode(table, job.accept, header)
            self.store.create(job.output_key, answer, content_type=job.accept)
        return None

    def _score_file(self, job: Job, scorer: Scorer) -> str:
        """A file's (or a text's) job: the one row of a model whose one input takes it. The
        answer is the model's one binary output as it is when ``accept`` takes its media type
        (``*/*`` does), else the table in the format ``accept`` names (JSON for ``*/*``)."""
        table = self._predict_file(job, scorer)
        tracing.note_rows(table.num_rows)
        found = raw.answer(table, scorer.outputs, scorer.output_content_types, job.accept)
        if found is not None:
            answer, media = found
        elif job.accept == "*/*" or job.accept in sagemaker.ACCEPTED:
            media = codecs.JSON if job.accept == "*/*" else job.accept
            answer = sagemaker.encode(table, media)
        else:
            declared = [m for m in scorer.output_content_types.values()]
            raise UnsupportedFormat(job.accept, [*declared, *sagemaker.ACCEPTED])
        with contextlib.suppress(AlreadyExists):  # an earlier run wrote it: the same answer
            self.store.create(job.output_key, answer, content_type=media)
        return media

    def _predict_file(self, job: Job, scorer: Scorer) -> pa.Table:
        """The answer to a file's job. A model that reads its one input as a file
        (``Feature.path``) gets the input downloaded, in blocks, to a private local file:
        the worker never holds it in memory (a 1 GB scan); any other gets its bytes."""
        inputs = scorer.inputs
        if not (len(inputs) == 1 and inputs[0].path):
            return scorer.predict(raw.Raw(self.store.read(job.input_key), job.content_type))
        with tempfile.TemporaryDirectory(prefix="mmserve-job-") as folder:
            local = Path(folder) / "input"
            with local.open("wb") as out:
                for block in self.store.stream(job.input_key):
                    out.write(block)
            return scorer.predict(raw.Raw(b"", job.content_type, local))

    def fail(self, token: str, error: JobError) -> Job:
        """Record ``error`` (``error.json`` and the record) unless the job already finished."""
        job = self.jobs.get(token)
        if job.status.finished:
            return job
        document = {"job_id": token, "status": Status.FAILED.value, "error": error.model_dump()}
        self.store.write(job.error_key, json.dumps(document).encode(), content_type=codecs.JSON)
        return self.jobs.update(token, finishing(Status.FAILED, error))

    def _counted(self, job: Job) -> None:
        kind = "succeeded" if job.error is None else f"failed:{job.error.type}"
        counts = {kind: 1.0}
        if job.finished_at is not None:
            counts |= latency_counts((job.finished_at - job.created_at).total_seconds())
        self.queue.finished(job, counts)  # counted, and its waiters told, at once

    # -- notifications ---------------------------------------------------------------------

    def _notify(self, job: Job) -> Job:
        """Hand the job's notification, if it is owed one, to the queue: it is delivered off
        this job's slot (a task of its own, or a thread), never holding it."""
        if job.callback_url is not None and job.notification is None:
            self.queue.notify(job.id)
        return job

    def notify(self, token: str, attempt: int) -> float | None:
        """One attempt (``attempt`` from 0) at job ``token``'s notification: the delay before
        the next one, or ``None`` once it is over (delivered, refused, or failed for good;
        the outcome recorded in the job). A failing callback never fails the job."""
        job = self.jobs.get(token)
        if job.callback_url is None or job.notification is not None:
            return None
        body = json.dumps(notification(job, self.store)).encode()
        policy = Policy.of(self.settings.callback_allowed)
        outcome = deliver(
            job.callback_url,
            body,
            {"X-MMServe-Job-Id": job.id},
            policy,
            self.settings.callback_timeout_s,
        )
        if outcome.retry and attempt + 1 < self.settings.callback_attempts:
            log.warning(
                "callback of job %s failed (attempt %d): %s", job.id, attempt + 1, outcome.detail
            )
            return backoff(attempt, base=0.5, cap=10)
        record = Notification(status=outcome.status, attempts=attempt + 1, detail=outcome.detail)
        level = logging.INFO if outcome.status == "delivered" else logging.ERROR
        log.log(level, "callback of job %s %s: %s", job.id, outcome.status, outcome.detail)
        self.jobs.update(token, lambda j: j.model_copy(update={"notification": record}))
        return None

    # -- recovery -----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Enqueue again the open jobs with no message and no live worker (a Redis restart,
        a failed publish, a dead worker); fail the queued ones past their TTL."""
        report = SweepReport()
        grace = timedelta(seconds=self.settings.sweep_grace_s)
        waiting = self.queue.waiting()  # before the leases: a job may move from one to the other
        for token in self.jobs.open_tokens():
            try:
                job = self.jobs.get(token)
            except JobNotFound:
                continue
            report.open += 1
            if job.status.finished:  # finished, but its open marker survived a crash
                self.jobs.update(token, lambda j: j)
                report.closed += 1
            elif not self._lost(job, waiting, grace):
                continue
            elif job.status is Status.QUEUED and job.expires_at and now() > job.expires_at:
                self.fail(token, _expired(job))
                report.expired += 1
            else:
                self.queue.enqueue(job)
                report.enqueued += 1
        if report.enqueued:
            log.info("sweep: %d of %d open jobs enqueued again", report.enqueued, report.open)
        return report

    def _lost(self, job: Job, waiting: set[str], grace: timedelta) -> bool:
        """No message waits for the job and no worker runs it (and it is not so new that
        its submit may still be publishing)."""
        if job.id in waiting or self.queue.leased(job.id):
            return False
        return now() - (job.started_at or job.created_at) >= grace


def notification(job: Job, store: Store) -> dict[str, Any]:
    """The SageMaker-style notification body of a finished job."""
    body: dict[str, Any] = {
        "eventVersion": "1.0",
        "eventSource": "mmserve",
        "eventName": "InferenceResult",
        "eventTime": _iso(job.finished_at),
        "receivedTime": _iso(job.created_at),
        "invocationStatus": "Completed" if job.status is Status.SUCCEEDED else "Failed",
        "inferenceId": job.idempotency_key or job.id,
        "jobId": job.id,
        "requestParameters": {
            "endpointName": job.requested,
            "model": job.model,
            "contentType": job.content_type,
            "inputLocation": store.uri(job.input_key),
        },
        "responseParameters": {"contentType": job.output_type},
    }
    if job.status is Status.SUCCEEDED:
        body["responseParameters"]["outputLocation"] = store.uri(job.output_key)
    else:
        body["failureReason"] = job.error.message if job.error else job.status.value
        body["responseParameters"]["failureLocation"] = store.uri(job.error_key)
    return body


def _iso(moment: Any) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _expired(job: Job) -> JobError:
    when = _iso(job.expires_at)
    return JobError(type="Expired", message=f"the job waited in the queue past {when}")


def _requeued(job: Job) -> Job:
    if job.status.finished:
        return job
    return job.model_copy(update={"status": Status.QUEUED, "retries": job.retries + 1})


def _error_of(err: BaseException, job: Job) -> JobError:
    from celery.exceptions import SoftTimeLimitExceeded

    # Celery's time limit, raised inside the job (the model call wraps it in a ModelError).
    if isinstance(err, SoftTimeLimitExceeded) or isinstance(err.__cause__, SoftTimeLimitExceeded):
        message = f"the job ran past its time limit of {job.time_limit_s:g} s"
        return JobError(type="TimeLimit", message=message)
    if isinstance(err, MMServeError):
        return JobError(type=type(err).__name__, message=err.message)
    return JobError(type="ModelError", message=f"{type(err).__name__}: {err}")
