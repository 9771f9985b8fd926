"""The floor of ``benchmarks/async.py``: a Celery app with one task that returns at once.

    FLOOR_REDIS_URL=redis://127.0.0.1:P/1 celery -A floor worker --concurrency N

(with ``benchmarks/async`` on ``PYTHONPATH``). It has mmserve's broker options (JSON only,
acknowledged late, one message prefetched per process), so the gap to an mmserve job is
mmserve's own work; it keeps its results in Redis, so the client can ``.get()`` them.
"""

from __future__ import annotations

import os

from celery import Celery

TASK = "floor.noop"
QUEUE = "floor"


def make_app(redis_url: str) -> Celery:
    app = Celery("floor", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name=TASK)
    def noop(token: int) -> int:
        return token

    return app


# What ``celery -A floor`` finds; the benchmark's client builds its own with make_app.
app = make_app(os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/1"))
