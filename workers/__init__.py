"""Celery workers: async-job tasks, batch partitions, the streaming consumer (issues 4-6)."""

from __future__ import annotations

from serving import tracing
from serving.registry import Registry
from serving.settings import Settings
from workers.queue import LocalQueue, Queue, RedisQueue
from workers.runner import Runner


def job_runner(settings: Settings, registry: Registry | None = None) -> Runner:
    """The jobs' runner over the configured queue: Celery on ``MMSERVE_BROKER_URL``, or with
    no broker, threads of this process (embedded mode)."""
    registry = registry or Registry.from_settings(settings)
    queue: Queue
    if settings.broker_url is not None:
        from workers.app import make_celery

        url = settings.redis or settings.broker_url
        queue = RedisQueue(make_celery(settings), url, settings.jobs)
        return Runner(registry, queue, settings.jobs, tracing.tracer(settings))
    local = LocalQueue(lambda token: runner.run(token), notify=lambda t, n: runner.notify(t, n))
    runner = Runner(registry, local, settings.jobs, tracing.tracer(settings))
    return runner
