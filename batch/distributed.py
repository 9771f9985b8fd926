"""Distributed batch runs: one Celery task per partition, on any number of ``mmserve worker``s.

The coordinator (the ``mmserve batch run --distributed`` process) sends the parts not yet
written, waits for their records, and commits the manifest when every part is there. A part
is written under a lease (as a job is): a worker that dies mid-part lets its lease lapse,
and the coordinator sends the part again, so the run completes on the workers that remain.
A part that fails for good (a bad row under ``--on-error fail``, a file its reader cannot
read, any error that is not transient) records why in ``_failed/``, and the run stops with
that reason. Every resend is bounded: a part that failed transiently is sent again at most
``MMSERVE_JOBS__RETRIES`` times, one lost with its worker at most ``MMSERVE_JOBS__MAX_DELIVERIES``
times in all; then the run stops, naming the part and the cause.

A part's message is confined as a run's (:mod:`batch.places`): its input, output and file
must be under the store or an allowed root, or the worker does nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pyarrow.fs as pafs

from batch.parts import Partition, PartResult, done_part, write_part
from batch.places import Roots
from batch.runner import Run, failure_message
from batch.spec import BatchSpec, InputFile, confined, filesystem
from serving import scorers, tracing
from serving.errors import InvalidName, MMServeError, ObjectNotFound
from serving.predictor import Predictor, Scorer
from serving.settings import Settings
from serving.store import Store
from workers.queue import RedisQueue

PART_TASK = "mmserve.batch.part"
log = logging.getLogger("mmserve.batch")
_POLL_S = 0.5


class PartFailed(MMServeError):
    pass


def execute(run: Run, todo: list[Partition], settings: Settings) -> Iterator[PartResult]:
    """Have the workers write ``todo``; yields each part's record as it appears."""
    from workers.app import make_celery

    broker = settings.broker_url
    if broker is None:
        raise PartFailed("--distributed needs MMSERVE_BROKER_URL (Redis) and mmserve workers")
    try:  # the workers confine each part's message: refuse here what they would refuse
        confined(run.spec, Roots.of(settings))
    except InvalidName as err:
        raise PartFailed(f"the workers refuse this run: {err.message}") from None
    queue = RedisQueue(make_celery(settings), settings.redis_url or broker, settings.jobs)
    sent: dict[str, float] = {}
    sends: dict[str, int] = {}
    trace = tracing.carrier() if settings.opentelemetry else {}

    def send(partition: Partition) -> None:
        run.out.delete(f"_failed/{partition.name}.json")
        run.out.delete(f"_failed/{partition.name}.deaths")
        # The run's trace context travels with the partition (a worker before it ignores it).
        fields = {**asdict(partition), "trace_context": trace}
        args = [run.spec.model_dump_json(), run.run_id, run.model, fields]
        queue.publish(PART_TASK, _unit(run.run_id, partition), args)
        sent[partition.name] = time.monotonic()
        sends[partition.name] = sends.get(partition.name, 0) + 1

    for partition in todo:
        send(partition)
    pending = list(todo)
    while pending:
        time.sleep(_POLL_S)
        for partition in list(pending):
            result = done_part(run.out, partition.name)
            if result is not None:
                pending.remove(partition)
                yield result
            elif (failure := _failure(run.out, partition)) is not None:
                if not failure.get("retryable") or sends[partition.name] > settings.jobs.retries:
                    raise PartFailed(_why(partition, failure, sends[partition.name]))
                send(partition)
        waiting = queue.waiting() if pending else set()
        for partition in pending:
            unit = _unit(run.run_id, partition)
            if unit in waiting or queue.leased(unit):
                continue
            if time.monotonic() - sent[partition.name] > settings.jobs.lease_s:
                if sends[partition.name] >= settings.jobs.max_deliveries:
                    raise PartFailed(_lost(partition, sends[partition.name]))
                send(partition)  # no message, no live worker: lost with its worker


def run_part(
    queue: RedisQueue,
    settings: Settings,
    predictor_of: Callable[[str], Predictor],
    spec_json: str,
    run_id: str,
    model: str,
    partition_fields: dict[str, Any],
) -> None:
    """One part, in a worker: written once, under its lease (a duplicate delivery, or one
    that finds the part written or failed, does nothing). ``model`` is the run's pinned reference
    (a chain: each step's), each model loaded by ``predictor_of``."""
    roots = Roots.of(settings)
    file = InputFile(**partition_fields["file"])
    groups = partition_fields["row_groups"]
    more = tuple(InputFile(**f) for f in partition_fields.get("files", ()))
    partition = Partition(
        partition_fields["index"], file, None if groups is None else tuple(groups), more
    )
    try:
        spec = confined(BatchSpec.model_validate_json(spec_json), roots)
        fs, _ = filesystem(spec.input, settings.aws)
        for each in (file, *more):
            if not roots.holds(each.path, isinstance(fs, pafs.LocalFileSystem)):
                raise InvalidName("batch input file", each.path, "outside the allowed roots")
    except InvalidName as err:
        log.error("batch part %s of run %s refused: %s", partition.name, run_id, err.message)
        return
    out = Store.from_url(spec.output, settings.aws)
    if done_part(out, partition.name) is not None:
        return
    lease = queue.claim(_unit(run_id, partition))
    if lease is None:
        return
    with lease:  # written, or failed until the coordinator sends it again: nothing to do
        if done_part(out, partition.name) is not None or _failure(out, partition) is not None:
            return
        with tracing.within(partition_fields.get("trace_context", {})):
            failure = _attempt(
                spec, partition, lambda: scorers.assemble(model, predictor_of), out, settings
            )
        if failure is not None:  # recorded for the coordinator, which decides on a resend
            log.error("batch part %s of run %s failed: %s", partition.name, run_id, failure)
            out.write(f"_failed/{partition.name}.json", json.dumps(failure).encode())


def _attempt(
    spec: BatchSpec,
    partition: Partition,
    scorer: Callable[[], Scorer],
    out: Store,
    settings: Settings,
) -> dict[str, Any] | None:
    """Write the part; ``None`` if it is written, else why not. A delivery whose worker died
    mid-part comes back (Celery hands it out again): past ``max_deliveries`` such deaths in a
    row the part fails instead of killing worker after worker."""
    died = f"_failed/{partition.name}.deaths"
    deaths = int(out.update(died, lambda count: str(int(count or 0) + 1).encode())) - 1
    if deaths >= settings.jobs.max_deliveries:
        message = (
            f"{partition.name}: its worker died {deaths} times while writing it (out of "
            "memory, or a crash in the model); not tried again"
        )
        return {"type": "WorkerLost", "message": message, "retryable": False}
    try:
        write_part(spec, partition, scorer(), out, settings)
        return None
    except Exception as err:
        log.exception("batch part %s failed", partition.name)
        retryable = isinstance(err, MMServeError) and err.retryable
        return {"type": type(err).__name__, "message": failure_message(err), "retryable": retryable}
    finally:
        out.delete(died)


def _failure(out: Store, partition: Partition) -> dict[str, Any] | None:
    try:
        failure: dict[str, Any] = json.loads(out.read(f"_failed/{partition.name}.json"))
    except ObjectNotFound:
        return None
    return failure


def _why(partition: Partition, failure: dict[str, Any], sends: int) -> str:
    if failure["type"] in ("BadRow", "BadFile"):
        return str(failure["message"])
    tries = f" (sent {sends} times)" if failure.get("retryable") else ""
    return f"{partition.name} failed{tries}: {failure['type']}: {failure['message']}"


def _lost(partition: Partition, sends: int) -> str:
    return (
        f"{partition.name} was sent {sends} times and never written: the workers that took "
        "it died (out of memory, or a crash in the model), or its messages were lost "
        "(MMSERVE_JOBS__MAX_DELIVERIES)"
    )


def _unit(run_id: str, partition: Partition) -> str:
    return f"{run_id}.{partition.name}"
