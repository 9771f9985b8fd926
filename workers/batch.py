"""Batch runs started from the API: written by an ``mmserve worker`` (a Celery task) when a
broker is configured, else by a thread of the server (embedded mode)."""

from __future__ import annotations

import json
import logging
import threading

from batch.runner import ERROR, run_batch
from batch.spec import BatchSpec
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
    args = (settings, registry, spec, run_id, distributed)
    name = f"batch-{run_id[:8]}"
    threading.Thread(target=run_recorded, args=args, name=name, daemon=True).start()


def run_recorded(
    settings: Settings, registry: Registry, spec: BatchSpec, run_id: str, distributed: bool
) -> None:
    """Write the run; a failure is recorded in its output (``_error.json``) for its status."""
    try:
        run_batch(spec, registry, settings, run_id=run_id, resume=True, distributed=distributed)
    except Exception as err:
        log.exception("batch run %s failed", run_id)
        error = {"type": type(err).__name__, "message": getattr(err, "message", str(err))}
        Store.from_url(spec.output, settings.aws).write(ERROR, json.dumps(error).encode())
