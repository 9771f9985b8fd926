"""The Celery application: job tasks over Redis, JSON only, acknowledged late.

    mmserve worker     # celery worker on MMSERVE_BROKER_URL
    mmserve beat       # the periodic sweep

Messages carry a job token and nothing else (the store has the job), and only JSON is
accepted: nothing on the queue is ever unpickled. A message is acknowledged after its task
ran, and handed back if the worker process died, so no job is lost with a worker; the
visibility timeout is longer than the longest job, so Redis never hands a running job to a
second worker; results are not kept in a result backend (the store holds them).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from celery import Celery, Task
from celery.beat import BeatLazyFunc
from celery.signals import beat_embedded_init, worker_process_init, worker_process_shutdown

from batch.distributed import PART_TASK, run_part
from batch.places import Roots
from batch.runner import start
from batch.schedules import SCHEDULED_TASK, Schedule, fired_now, load
from batch.spec import BatchSpec, confined
from serving import tracing
from serving.registry import Registry
from serving.settings import Settings
from workers.batch import RUN_TASK as BATCH_RUN_TASK
from workers.batch import run_recorded
from workers.queue import (
    NOTIFY_TASK,
    RUN_TASK,
    SWEEP_TASK,
    RedisQueue,
    backoff,
    visibility_timeout,
)
from workers.runner import Runner, transient


def make_celery(settings: Settings) -> Celery:
    """The Celery app of ``settings.broker_url`` with the job tasks registered."""
    broker = settings.broker_url
    if broker is None:
        raise ValueError("MMSERVE_BROKER_URL is not set: no broker for Celery")
    jobs = settings.jobs
    app = Celery("mmserve", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=jobs.queue,
        broker_transport_options={"visibility_timeout": visibility_timeout(jobs)},
        # A worker outlives its broker: it reconnects (with jittered backoff, see
        # workers/_consumer.py) for as long as Redis is away, and never exits for it.
        worker_consumer="workers._consumer:Consumer",
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=2,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "mmserve-sweep": {"task": SWEEP_TASK, "schedule": jobs.sweep_interval_s},
        },
    )

    @functools.cache
    def runner() -> Runner:
        # Built on first use in each worker process (after the fork): no S3 client or
        # Redis connection is shared between processes.
        queue = RedisQueue(app, settings.redis_url or broker, jobs)
        return Runner(Registry.from_settings(settings), queue, jobs, tracing.tracer(settings))

    schedules = load(settings.schedules) if settings.schedules else []
    for schedule in schedules:
        app.conf.beat_schedule[f"mmserve-batch-{schedule.name}"] = {
            "task": SCHEDULED_TASK,
            "schedule": schedule.timing(),
            # The schedule itself travels with the message: a worker needs no schedules file.
            "args": [schedule.model_dump_json()],
            # So does the time it fired, taken by the beat as it sends it: the run's output
            # and id, however late a worker takes the message (or takes it again).
            "kwargs": {"fired": BeatLazyFunc(fired_now)},
        }

    @worker_process_init.connect(weak=False)
    def warm(**_: Any) -> None:
        runner()  # imports, the store and Redis clients: before the first job, not during it

    @worker_process_shutdown.connect(weak=False)
    def flush(**_: Any) -> None:
        if settings.opentelemetry:
            tracing.flush()  # a pool process ends without its exit hooks: spans would be lost

    @app.task(name=RUN_TASK, bind=True, max_retries=jobs.retries)
    def run_job(task: Task, token: str) -> None:
        try:
            runner().run(token)
        except Exception as err:
            if not transient(err):
                raise
            if task.request.retries >= jobs.retries:
                runner().fail(token, _gave_up(err, task.request.retries))
                return
            raise task.retry(exc=err, countdown=backoff(task.request.retries)) from err

    @app.task(name=NOTIFY_TASK, bind=True, max_retries=None)
    def notify_job(task: Task, token: str) -> None:
        # Its own task: a callback that hangs holds a worker process for one attempt's
        # deadline at most, and never the job's slot; the wait between attempts holds none.
        try:
            delay = runner().notify(token, task.request.retries)
        except Exception as err:
            if not transient(err) or task.request.retries >= jobs.retries:
                raise
            delay = backoff(task.request.retries)
        if delay is not None:
            raise task.retry(countdown=delay)

    @app.task(name=PART_TASK)
    def batch_part(spec: str, run_id: str, model: str, partition: dict[str, Any]) -> None:
        queue = runner().queue
        assert isinstance(queue, RedisQueue)
        run_part(queue, settings, runner().registry.load, spec, run_id, model, partition)

    @app.task(name=BATCH_RUN_TASK)
    def batch_run(spec: str, run_id: str, distributed: bool) -> None:
        registry = runner().registry
        batch = BatchSpec.model_validate_json(spec)
        run_recorded(settings, registry, batch, run_id, distributed, runner().queue.count)

    @app.task(name=SCHEDULED_TASK)
    def scheduled(schedule_json: str, fired: str | None = None) -> None:
        when = datetime.fromisoformat(fired) if fired else datetime.now(UTC)
        spec, run_id = Schedule.model_validate_json(schedule_json).run_of(when)
        registry = runner().registry
        roots = Roots.of(settings)  # a schedule comes over the queue: confined as any run
        spec = confined(spec, roots)
        start(spec, registry, settings, run_id, False, roots)  # again: the same run, resumed
        run_recorded(settings, registry, spec, run_id, False, runner().queue.count)

    @app.task(name=SWEEP_TASK)
    def sweep() -> dict[str, Any]:
        return vars(runner().sweep())

    app.runner = runner  # type: ignore[attr-defined]
    return app


@beat_embedded_init.connect(weak=False)
def _beat_dies_with_its_worker(**_: Any) -> None:
    """``mmserve worker --beat`` runs beat in a child process, which outlived a worker killed
    with SIGKILL (the OOM killer, a container runtime) and went on firing the sweep and the
    schedules beside the next worker's beat. Linux ends it with its parent instead.

    The worker stops it with SIGTERM, which now ends it at once, whatever it is doing: its
    schedule file is in a temporary directory that goes with the worker, so there is
    nothing to save, and nothing it was in the middle of can keep the worker waiting."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform != "linux":
        return
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != _WORKER:  # the worker died before the prctl
        os._exit(0)


_PR_SET_PDEATHSIG = 1
_WORKER = os.getpid()  # a worker imports this module before it forks its beat


def _gave_up(err: BaseException, retries: int) -> Any:
    from workers.jobs import JobError

    return JobError(type="Unavailable", message=f"gave up after {retries} retries: {err}")
