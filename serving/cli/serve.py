"""``mmserve serve``, ``mmserve worker``, ``mmserve beat``: the long-running processes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from serving.cli._app import (
    PORT,
    app,
    fail,
)
from serving.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = PORT,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Also serve the Open Inference Protocol over gRPC on this port (mmserve[grpc]).",
            show_default="MMSERVE_GRPC_PORT",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    serverless: Annotated[
        bool, typer.Option(help="Unload idle models (MMSERVE_SERVERLESS__IDLE_TTL_S).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request, as JSON lines.")] = False,
) -> None:
    """Serve every registered model over HTTP: V1, V2 and SageMaker routes, health, metrics;
    with --grpc-port, V2 over gRPC too, from the same process."""
    import uvicorn

    from serving import grpc, logs
    from serving.errors import MMServeError
    from serving.features.online import served

    try:
        served(Settings())  # a features file that cannot serve: said once, before the workers
    except MMServeError as err:
        fail(err.message, 2)
    if serverless:  # read by the Settings each server process builds
        os.environ["MMSERVE_SERVERLESS__ENABLED"] = "true"
    if grpc_port is not None:
        if not grpc.available():
            fail(f"--grpc-port: {grpc.MISSING}", 2)
        os.environ["MMSERVE_GRPC_PORT"] = str(grpc_port)
    os.environ["MMSERVE_GRPC_HOST"] = host  # gRPC, when on, binds where HTTP does
    with contextlib.ExitStack() as stack:
        if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # One /metrics for all the processes: each writes its counts here, any adds up.
            metrics = stack.enter_context(tempfile.TemporaryDirectory(prefix="mmserve-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
        uvicorn.run(
            "serving.http:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            log_config=logs.config(log_level, access_log),
            access_log=False,
        )


@app.command("worker")
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Jobs run at once (processes or threads); default: one per CPU."),
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(
            help="Queues to consume, comma-separated.", show_default="MMSERVE_JOBS__QUEUE"
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "info",
    beat: Annotated[
        bool, typer.Option(help="Also run the periodic sweep here (one per deployment is enough).")
    ] = False,
    pool: Annotated[
        Literal["prefork", "solo", "threads"], typer.Option(help="How jobs run in parallel.")
    ] = "prefork",
) -> None:
    """Run a Celery worker of the async jobs on MMSERVE_BROKER_URL; SIGTERM lets jobs finish."""
    settings = Settings()
    celery = _celery(settings)
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--queues={queues or settings.jobs.queue}",
        f"--pool={pool}",
        # Unique per process, so several workers on one machine do not clash; no gossip,
        # mingle or heartbeat: mmserve's workers share nothing but the queue.
        f"--hostname=mmserve@%h-{os.getpid()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if beat:
        argv.append("--beat")
    _run_celery(celery, argv)


@app.command("beat")
def beat(loglevel: Annotated[str, typer.Option(help="Log level.")] = "info") -> None:
    """Run the periodic sweep (Celery beat) that hands lost jobs to workers again; run one."""
    _run_celery(_celery(Settings()), ["beat", f"--loglevel={loglevel}"])


def _celery(settings: Settings) -> Celery:
    if settings.broker_url is None:
        fail("MMSERVE_BROKER_URL is not set: workers need a Redis broker (redis://host:6379/0)", 2)
    from serving.errors import InvalidSchedules
    from workers.app import make_celery

    try:
        return make_celery(settings)
    except InvalidSchedules as refused:  # MMSERVE_SCHEDULES: said before anything starts
        fail(refused.message, 2)


def _run_celery(celery: Celery, argv: list[str]) -> None:
    """Run a celery command with its beat schedule file in a temporary directory (never the
    working directory, which may be read-only or shared), and exit with its exit code."""
    from celery.bin.celery import celery as command

    with tempfile.TemporaryDirectory(prefix="mmserve-celery-") as tmp:
        # What Celery.start() does, keeping the exit code it drops (click returns it in
        # non-standalone mode): a worker stopped by an unrecoverable error exited 0, and
        # nothing restarted it.
        command.params[0].default = celery
        try:
            code = command.main(
                [*argv, f"--schedule={Path(tmp) / 'beat-schedule'}"],
                "celery",
                standalone_mode=False,
            )
        finally:
            command.params[0].default = None
    if code:
        raise typer.Exit(code)
