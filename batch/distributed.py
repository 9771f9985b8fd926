"""Distributed batch runs: one Celery task per partition, on any number of ``mmserve worker``s.

The coordinator (the ``mmserve batch run --distributed`` process) sends the parts not yet
written, waits for their records, and commits the manifest when every part is there. A part
is written under a lease (as a job is): a worker that dies mid-part lets its lease lapse,
and the coordinator sends the part again, so the run completes on the workers that remain.
A part that fails for good (a bad row under ``--on-error fail``) records why in
``_failed/``, and the run stops with that reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from batch.parts import Partition, PartResult, done_part, write_part
from batch.runner import Run
from batch.spec import BatchSpec, InputFile
from serving import scorers
from serving.errors import MMServeError, ObjectNotFound
from serving.predictor import Predictor
from serving.settings import Settings
from serving.store import Store
from workers.queue import RedisQueue

PART_TASK = "mmserve.batch.part"
_POLL_S = 0.5


class PartFailed(MMServeError):
    pass


def execute(run: Run, todo: list[Partition], settings: Settings) -> Iterator[PartResult]:
    """Have the workers write ``todo``; yields each part's record as it appears."""
    from workers.app import make_celery

    broker = settings.broker_url
    if broker is None:
        raise PartFailed("--distributed needs MMSERVE_BROKER_URL (Redis) and mmserve workers")
    queue = RedisQueue(make_celery(settings), settings.redis_url or broker, settings.jobs)
    sent: dict[str, float] = {}

    def send(partition: Partition) -> None:
        run.out.delete(f"_failed/{partition.name}.json")
        args = [run.spec.model_dump_json(), run.run_id, run.model, asdict(partition)]
        queue.publish(PART_TASK, _unit(run.run_id, partition), args)
        sent[partition.name] = time.monotonic()

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
            else:
                _raise_if_failed(run.out, partition)
        waiting = queue.waiting() if pending else set()
        for partition in pending:
            unit = _unit(run.run_id, partition)
            if unit in waiting or queue.leased(unit):
                continue
            if time.monotonic() - sent[partition.name] > settings.jobs.lease_s:
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
    that finds the part written, does nothing). ``model`` is the run's pinned reference
    (a chain: each step's), each model loaded by ``predictor_of``."""
    spec = BatchSpec.model_validate_json(spec_json)
    file = InputFile(**partition_fields["file"])
    groups = partition_fields["row_groups"]
    partition = Partition(
        partition_fields["index"], file, None if groups is None else tuple(groups)
    )
    out = Store.from_url(spec.output, settings.aws)
    if done_part(out, partition.name) is not None:
        return
    lease = queue.claim(_unit(run_id, partition))
    if lease is None:
        return
    with lease:
        if done_part(out, partition.name) is not None:
            return
        scorer = scorers.assemble(model, predictor_of)
        try:
            write_part(spec, partition, scorer, out, settings)
        except MMServeError as err:
            if err.retryable:
                raise
            failure = {"type": type(err).__name__, "message": err.message}
            out.write(f"_failed/{partition.name}.json", json.dumps(failure).encode())


def _raise_if_failed(out: Store, partition: Partition) -> None:
    try:
        failure = json.loads(out.read(f"_failed/{partition.name}.json"))
    except ObjectNotFound:
        return
    if failure["type"] == "BadRow":
        raise PartFailed(failure["message"])
    raise PartFailed(f"{partition.name} failed: {failure['type']}: {failure['message']}")


def _unit(run_id: str, partition: Partition) -> str:
    return f"{run_id}.{partition.name}"
