"""Batch runs started from the API: written by an ``mmserve worker`` (a Celery task) when a
broker is configured, else by a thread of the server (embedded mode).

A run that comes over a queue is confined again (:mod:`batch.places`): whoever can send a
message must not reach outside the store and the allowed roots either. A refused run is
logged, and nothing is written where it pointed: its status says why from the store."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from batch.places import Roots
from batch.runner import ERROR, failure_message, refusal, run_batch
from batch.spec import BatchSpec, confined
from serving.errors import InvalidName
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store
from workers.queue import Queue, RedisQueue

RUN_TASK = "mmserve.batch.run"

log = logging.getLogger("mmserve.batch")


def launch(
    queue: Queue,
    settings: Settings,
    registry: Registry,
    spec: BatchSpec,
    run_id: str,
    distributed: bool,
) -> None:
    """Have the started run ``run_id`` written elsewhere: by a worker (through ``queue``'s
    broker), or with no broker, by a thread of this process."""
    if isinstance(queue, RedisQueue):
        queue.publish(RUN_TASK, run_id, [spec.model_dump_json(), run_id, distributed])
        return
    args = (settings, registry, spec, run_id, distributed, queue.count)
    name = f"batch-{run_id[:8]}"
    threading.Thread(target=run_recorded, args=args, name=name, daemon=True).start()


def run_recorded(
    settings: Settings,
    registry: Registry,
    spec: BatchSpec,
    run_id: str,
    distributed: bool,
    count: Callable[[dict[str, float]], None] | None = None,
) -> None:
    """Write the run; a failure is recorded in its output (``_error.json``) for its status:
    an mmserve error's message (which names files, rows and columns, never their bytes), or
    only the type of any other error (its text may quote the input; the log has it).
    ``count`` adds the run's outcome to the queue's counters (``/metrics`` of the API)."""
    roots = Roots.of(settings)
    try:
        spec = confined(spec, roots)
    except InvalidName as err:  # its output is no place to write: its record in the store is
        log.error("batch run %s refused: %s", run_id, err.message)
        if run_id.isalnum():
            error = {"type": type(err).__name__, "message": f"the worker refused it: {err.message}"}
            registry.store.write(refusal(run_id), json.dumps(error).encode())
        _counted(count, {"batch_runs:failed": 1})
        return
    try:
        manifest = run_batch(
            spec, registry, settings, run_id=run_id, resume=True, distributed=distributed,
            roots=roots,
        )  # fmt: skip
    except Exception as err:
        log.exception("batch run %s failed", run_id)
        error = {"type": type(err).__name__, "message": failure_message(err)}
        Store.from_url(spec.output, settings.aws).write(ERROR, json.dumps(error).encode())
        _counted(count, {"batch_runs:failed": 1})
        return
    rows = {"batch_rows": manifest["rows"], "batch_rejected_rows": manifest["rejected"]}
    _counted(count, {"batch_runs:succeeded": 1, **rows})


def _counted(count: Callable[[dict[str, float]], None] | None, amounts: dict[str, float]) -> None:
    """Counters are hints: Redis away loses the count, never the run's record."""
    if count is not None:
        try:
            count(amounts)
        except Exception:
            log.warning("batch run counters not added: %s", amounts, exc_info=True)
