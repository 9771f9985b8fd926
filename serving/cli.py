"""The ``mmserve`` command."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.client import HTTPResponse
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from serving.codecs import media_type_of, read_file, write_file
from serving.errors import JobNotFound, MMServeError
from serving.registry import Registry
from serving.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from workers.queue import LocalQueue
    from workers.runner import Runner

app = typer.Typer(
    help="mmserve: one model registry, every way a model is put to work.", no_args_is_help=True
)
models_app = typer.Typer(
    help="Register, list, inspect, alias and approve models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
jobs_app = typer.Typer(
    help="Async jobs on a running `mmserve serve`: submit, follow, fetch, cancel; recover.",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")
batch_app = typer.Typer(
    help="Batch transform: score whole datasets (parquet, CSV, JSON lines; local or S3).",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")

PORT = 8080
"""Where ``mmserve serve`` listens, and so where ``mmserve jobs`` looks for it by default."""

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(fn: F) -> F:
    """Print mmserve errors as one line on stderr and exit 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MMServeError as e:
            _fail(e.message)
        except ValidationError as e:  # options that contradict each other
            _fail(
                "; ".join(
                    str(problem["msg"]).removeprefix("Value error, ") for problem in e.errors()
                ),
                2,
            )

    return wrapper  # type: ignore[return-value]


def _fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``error: <message>`` as one line on stderr (never wrapped, never
    read as rich markup: it may quote a server or a file name)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _registry() -> Registry:
    return Registry.from_settings(Settings())


@models_app.command("register")
@_reports_errors
def register(
    path: Annotated[
        Path, typer.Argument(help="A .skops artifact (or .joblib/.pkl with --trust-pickle).")
    ],
    name: Annotated[str, typer.Option(help="Model name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    trust_pickle: Annotated[
        bool, typer.Option(help="Allow a pickle/joblib artifact (it runs code when loaded).")
    ] = False,
    trust_type: Annotated[
        list[str], typer.Option(help="A type the skops artifact may contain; repeat.")
    ] = [],  # noqa: B006
    input_example: Annotated[
        Path | None,
        typer.Option(help="Rows (csv/json/parquet) to infer and check the input schema."),
    ] = None,
    nullable: Annotated[
        list[str], typer.Option(help="A feature that may be null/NaN (the model copes); repeat.")
    ] = [],  # noqa: B006
    description: Annotated[str, typer.Option()] = "",
    tag: Annotated[list[str], typer.Option(help="key=value; repeat.")] = [],  # noqa: B006
    approval: Annotated[
        Literal["approved", "pending"] | None,
        typer.Option(help="New version status (default: MMSERVE_REGISTRY__DEFAULT_APPROVAL)."),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Point a protected alias at an unapproved version.")
    ] = False,
) -> None:
    """Register a model artifact as the next version of NAME."""
    tags = dict(t.split("=", 1) for t in tag if "=" in t)
    mv = _registry().register(
        path,
        name,
        alias=alias,
        trust_pickle=trust_pickle,
        trusted_types=trust_type,
        input_example=input_example,
        nullable=nullable,
        description=description,
        tags=tags,
        approval=approval,
        force=force,
    )
    out.print(
        f"registered [bold]{mv.ref}[/bold] ({mv.flavor}, {mv.task}, sha256 {mv.sha256[:12]}...)"
    )


@models_app.command("list")
@_reports_errors
def list_models() -> None:
    """Every registered model: versions, aliases, flavor, created."""
    registry = _registry()
    table = Table("name", "versions", "aliases", "flavor", "task", "latest", "created")
    for name in registry.models():
        versions = registry.version_numbers(name)
        latest = registry.get(f"{name}:{versions[-1]}")
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(registry.aliases(name).items()))
        table.add_row(
            name,
            str(len(versions)),
            aliases,
            latest.flavor,
            latest.task,
            str(latest.version),
            _when(latest.created),
        )
    out.print(table)


@models_app.command("show")
@_reports_errors
def show(ref: str) -> None:
    """The metadata of a version: sha256, input schema, outputs, libraries, approval."""
    out.print_json(_registry().get(ref).model_dump_json())


@models_app.command("alias")
@_reports_errors
def alias(
    name: str,
    alias: str,
    version: Annotated[
        int | None, typer.Argument(help="Version to point at (omit with --delete).")
    ] = None,
    delete: Annotated[bool, typer.Option(help="Remove the alias.")] = False,
    force: Annotated[
        bool, typer.Option(help="Allow an unapproved version on a protected alias.")
    ] = False,
    rollout: Annotated[
        str | None,
        typer.Option(
            help="Move it through a guarded rollout of the endpoints that serve it: "
            "canary:10%,wait=5m, linear:20%,every=1m or all-at-once (see endpoints shift)."
        ),
    ] = None,
    max_error_rate: MaxErrorRate = 0.01,
    max_p99_ms: MaxP99Ms = None,
    min_requests: MinRequests = 10,
    server: Servers = [],  # noqa: B006
    interval: Interval = 1.0,
) -> None:
    """Point ALIAS of model NAME at VERSION (or remove it)."""
    registry = _registry()
    if delete:
        registry.remove_alias(name, alias)
        out.print(f"removed alias {name}@{alias}")
        return
    if version is None:
        raise typer.BadParameter("give a VERSION, or --delete")
    if rollout is not None:
        controller = _controller(server, max_error_rate, max_p99_ms, min_requests, interval)
        _promote(registry, name, alias, version, rollout, force, controller)
        return
    registry.set_alias(name, alias, version, force=force)
    out.print(f"{name}@{alias} → {name}:{version}")


@models_app.command("approve")
@_reports_errors
def approve(ref: str) -> None:
    """Mark a version approved (it may then be aliased production)."""
    out.print(f"{_registry().set_approval(ref, 'approved').ref} approved")


@models_app.command("reject")
@_reports_errors
def reject(
    ref: str,
    force: Annotated[bool, typer.Option(help="Even if a protected alias points at it.")] = False,
) -> None:
    """Mark a version rejected."""
    out.print(f"{_registry().set_approval(ref, 'rejected', force=force).ref} rejected")


@app.command("predict")
@_reports_errors
def predict(
    ref: str,
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Rows: .csv, .json, .jsonl, .parquet or .arrow.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (format by extension); default: print."),
    ] = None,
    id_column: Annotated[
        list[str], typer.Option(help="Copy this input column to the output; repeat.")
    ] = [],  # noqa: B006
) -> None:
    """Score a file in-process, through the same predict path as every serving mode."""
    predictor = _registry().load(ref)
    result = predictor.predict(read_file(input), passthrough=id_column)
    if output is not None:
        write_file(result, output)
        err.print(f"{result.num_rows} rows scored by {predictor.ref} → {output}")
        return
    if not sys.stdout.isatty():
        sys.stdout.write(json.dumps({"model": predictor.ref, "rows": result.to_pylist()}) + "\n")
        return
    table = Table(*result.column_names, title=f"{predictor.ref}: {result.num_rows} rows")
    for row in result.to_pylist():
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()))
    out.print(table)


@app.command("serve")
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = PORT,
    workers: Annotated[int, typer.Option(help="Server processes.")] = 1,
    serverless: Annotated[
        bool, typer.Option(help="Unload idle models (MMSERVE_SERVERLESS__IDLE_TTL_S).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request, as JSON lines.")] = False,
) -> None:
    """Serve every registered model over HTTP: V1, V2 and SageMaker routes, health, metrics."""
    import uvicorn

    from serving import logs

    if serverless:  # read by the Settings each server process builds
        os.environ["MMSERVE_SERVERLESS__ENABLED"] = "true"
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
        _fail("MMSERVE_BROKER_URL is not set: workers need a Redis broker (redis://host:6379/0)", 2)
    from workers.app import make_celery

    return make_celery(settings)


def _run_celery(celery: Celery, argv: list[str]) -> None:
    """Run a celery command with its beat schedule file in a temporary directory (never the
    working directory, which may be read-only or shared), and exit with its exit code."""
    with tempfile.TemporaryDirectory(prefix="mmserve-celery-") as tmp:
        # start(), not worker_main(): it returns the exit code, which worker_main drops.
        code = celery.start([*argv, f"--schedule={Path(tmp) / 'beat-schedule'}"])
    if code:
        raise typer.Exit(code)


# -- mmserve jobs ---------------------------------------------------------------------------

ServerUrl = Annotated[
    str, typer.Option("--url", envvar="MMSERVE_URL", help="The running `mmserve serve`.")
]
ApiKey = Annotated[
    str | None,
    typer.Option(envvar="MMSERVE_API_KEY", help="Sent as 'Authorization: Bearer <key>'."),
]
DEFAULT_URL = f"http://127.0.0.1:{PORT}"
TIMEOUT_S = 60.0
"""The longest a request waits on a silent server (per connect or read)."""
MAX_INTERVAL_S = 5.0


@dataclass(frozen=True)
class _Server:
    """A running ``mmserve serve``, spoken to with urllib: the CLI depends on no HTTP client."""

    url: str
    api_key: str | None

    def open(
        self,
        method: str,
        path: str,
        body: IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTTPResponse:
        """The server's answer; an error answer, or no answer, ends the command (exit 1)."""
        headers = dict(headers or {})
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=body, headers=headers, method=method
        )
        try:
            response: HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as answer:
            with answer:
                _fail(f"{answer.code} {_message(answer.read(), answer.reason)}")
        except OSError as e:  # refused, unknown host, timed out (URLError or not)
            _fail(f"cannot reach mmserve at {self.url}: {getattr(e, 'reason', e)}")
        return response

    def record(self, token: str) -> dict[str, Any]:
        with self.open("GET", _job_path(token)) as response:
            job: dict[str, Any] = json.loads(response.read())
        return job

    def download(self, token: str, output: Path | None, accept: str | None = None) -> None:
        """Stream the job's result into ``output`` (or stdout, bytes as they are)."""
        headers = {"Accept": accept} if accept else {}
        with self.open("GET", f"{_job_path(token)}/result", headers=headers) as response:
            if output is None:
                sys.stdout.flush()
                shutil.copyfileobj(response, sys.stdout.buffer)
                sys.stdout.buffer.flush()
                return
            with output.open("wb") as file:
                shutil.copyfileobj(response, file)


def _message(body: bytes, reason: str) -> str:
    """The ``{"error": message}`` of an error answer; its reason phrase if it has none (a
    proxy's page, say)."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return reason


def _job_path(token: str) -> str:
    return f"/v1/jobs/{urllib.parse.quote(token, safe='')}"


@jobs_app.command("submit")
@_reports_errors
def submit(
    model: Annotated[str, typer.Argument(help="Model reference: name, name:version, name@alias.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The rows, uploaded as they are.")
    ],
    content_type: Annotated[
        str | None,
        typer.Option(
            help="The file's media type.",
            show_default="by suffix: csv, json, jsonl, parquet, arrow",
        ),
    ] = None,
    accept: Annotated[str | None, typer.Option(help="Media type of the result.")] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="POSTed a notification when the job finishes.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submitting again with the same key gives the same job.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job, as `jobs wait` does.")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait (exit 3 past it).")] = 3600,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Wait, then write the result here.")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Upload FILE as an async job for MODEL; print its id: TOKEN=$(mmserve jobs submit ...)."""
    server = _Server(url, api_key)
    headers = {
        "Content-Type": content_type or media_type_of(file),
        "Content-Length": str(file.stat().st_size),
    }
    given = {"Accept": accept, "X-Callback-Url": callback_url, "Idempotency-Key": idempotency_key}
    headers.update({name: value for name, value in given.items() if value is not None})
    path = f"/v1/models/{urllib.parse.quote(model, safe=':@')}/async"
    # The open file is the body: urllib sends it in blocks, never the whole file in memory.
    with file.open("rb") as body, server.open("POST", path, body, headers) as response:
        job = json.loads(response.read())
    typer.echo(job["job_id"])
    status_url = urllib.parse.urljoin(url.rstrip("/") + "/", job["status_url"])
    err.print(f"status: {status_url}", highlight=False, soft_wrap=True)
    if wait or output is not None:
        _wait(server, job["job_id"], timeout, 0.5, output)


@jobs_app.command("status")
def status(token: str, url: ServerUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """The job's record: status, model, times, attempts, error, output location."""
    out.print_json(data=_Server(url, api_key).record(token))


@jobs_app.command("result")
def result(
    token: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here; default: stdout.")
    ] = None,
    accept: Annotated[str | None, typer.Option(help="Media type of the result.")] = None,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Fetch the result of a succeeded job (error 409 while it is not)."""
    _Server(url, api_key).download(token, output, accept)


@jobs_app.command("wait")
def wait(
    token: str,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait (exit 3 past it).")] = 3600,
    interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between polls, growing x1.5 up to 5.")
    ] = 0.5,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the result here.")
    ] = None,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Wait for the job to finish: exit 0 if it succeeded, 1 if it failed or was cancelled."""
    _wait(_Server(url, api_key), token, timeout, interval, output)


@jobs_app.command("cancel")
def cancel(token: str, url: ServerUrl = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Cancel a job that has not finished (error 409 if it has)."""
    with _Server(url, api_key).open("DELETE", _job_path(token)):
        pass
    typer.echo(f"job {token} cancelled")


def _wait(
    server: _Server, token: str, timeout: float, interval: float, output: Path | None
) -> None:
    job = _poll(server, token, timeout, interval)
    if job["status"] != "succeeded":
        error = job.get("error")
        _fail(
            f"job {token} {job['status']}"
            + (f": {error['type']}: {error['message']}" if error else "")
        )
    if output is None:
        err.print(f"job {token} succeeded", highlight=False)
        return
    server.download(token, output)
    err.print(f"job {token} succeeded → {output}", highlight=False, soft_wrap=True)


def _poll(server: _Server, token: str, timeout: float, interval: float) -> dict[str, Any]:
    """The job's record once it finished; exit 3 if it has not within ``timeout``. Polls
    back off (x1.5, up to 5 s) so a long job costs the server few requests."""
    deadline = time.monotonic() + timeout
    ceiling = max(interval, MAX_INTERVAL_S)
    while (job := server.record(token))["status"] not in ("succeeded", "failed", "cancelled"):
        left = deadline - time.monotonic()
        if left <= 0:
            _fail(f"job {token} is still {job['status']} after {timeout:g}s", 3)
        time.sleep(min(interval, left))
        interval = min(interval * 1.5, ceiling)
    return job


@jobs_app.command("recover")
@_reports_errors
def recover() -> None:
    """Sweep the store now: enqueue again the open jobs whose queue message was lost, fail
    the expired. With no broker, run them in this process and wait for them."""
    from workers import job_runner
    from workers.queue import LocalQueue

    runner = job_runner(Settings())
    tokens = runner.jobs.open_tokens()
    report = runner.sweep()
    out.print(
        f"{report.open} open: {report.enqueued} enqueued, {report.expired} expired, "
        f"{report.closed} closed",
        highlight=False,
    )
    if isinstance(runner.queue, LocalQueue):
        _run_here(runner, runner.queue, tokens)


def _run_here(runner: Runner, queue: LocalQueue, tokens: list[str]) -> None:
    """Wait for the jobs the sweep gave this process's threads (embedded mode: nothing else
    runs them once the command exits), then print where each open job ended up."""
    queue.close(wait=True)
    for token in tokens:
        with contextlib.suppress(JobNotFound):  # an open marker whose record is gone
            out.print(f"{token} {runner.jobs.get(token).status}", highlight=False)


# -- mmserve batch --------------------------------------------------------------------------


@batch_app.command("run")
@_reports_errors
def batch_run(
    model: Annotated[str, typer.Option(help="Model reference; its version is pinned at start.")],
    input: Annotated[str, typer.Option(help="A file, folder or glob; a path or s3://...")],
    output: Annotated[str, typer.Option(help="A folder; a path or s3://...")],
    id_column: Annotated[str | None, typer.Option(help="Input column kept in the output.")] = None,
    format: Annotated[
        Literal["parquet", "csv", "jsonl"], typer.Option(help="Format of the parts.")
    ] = "parquet",
    keep_columns: Annotated[
        str | None, typer.Option(help="More input columns to keep, comma-separated.")
    ] = None,
    join_input: Annotated[bool, typer.Option(help="Keep every input column.")] = False,
    on_error: Annotated[
        Literal["fail", "skip"], typer.Option(help="A bad row stops the run, or goes to _rejects/.")
    ] = "fail",
    workers: Annotated[int, typer.Option(min=1, help="Processes on this machine.")] = 1,
    distributed: Annotated[
        bool, typer.Option(help="One task per partition on the mmserve workers (needs a broker).")
    ] = False,
    run_id: Annotated[str | None, typer.Option(help="Resume this run (or name a new one).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume the run the output holds.")] = False,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows scored at a time.")] = 65_536,
    partition_rows: Annotated[
        int, typer.Option(min=1, help="Rows per partition of a large parquet file.")
    ] = 1_000_000,
    publish_online: Annotated[
        bool,
        typer.Option(
            help="Also publish each row's outputs by --id-column to Redis, for the server's "
            "GET /v1/models/{ref}/precomputed/{id}."
        ),
    ] = False,
) -> None:
    """Score every row of INPUT into OUTPUT: one part per partition, then _manifest.json.
    Run it again (--resume) after a crash: done parts are kept, the rest written."""
    from batch.runner import run_batch
    from batch.spec import BatchSpec

    spec = BatchSpec(
        model=model,
        input=input,
        output=output,
        id_column=id_column,
        format=format,
        keep_columns=[c for c in (keep_columns or "").split(",") if c],
        join_input=join_input,
        on_error=on_error,
        batch_rows=batch_rows,
        partition_rows=partition_rows,
        publish_online=publish_online,
    )
    settings = Settings()
    with _progress() as progress:
        task = progress.add_task("parts", total=None, rows=0, rate=0.0)
        started = time.monotonic()

        def planned(run: Any, total: int, done: int) -> None:
            err.print(f"run {run.run_id}: {run.model}, {total} parts ({done} already done)")
            progress.update(task, total=total, completed=done)

        def part_done(result: Any) -> None:
            rows = progress.tasks[task].fields["rows"] + result.rows
            rate = rows / max(time.monotonic() - started, 1e-9)
            progress.update(task, advance=1, rows=rows, rate=rate)

        manifest = run_batch(
            spec,
            Registry.from_settings(settings),
            settings,
            run_id=run_id,
            resume=resume,
            workers=workers,
            distributed=distributed,
            on_plan=planned,
            on_part=part_done,
        )
    err.print(
        f"{manifest['rows']} rows scored by {manifest['model']} in {len(manifest['parts'])} "
        f"parts ({manifest['rejected']} rejected), {manifest['seconds']:.1f} s → {output}",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(manifest["run_id"])


@batch_app.command("status")
@_reports_errors
def batch_status(run_id: str) -> None:
    """Where a run stands: parts done of all, rows, rejects, finished or not."""
    from batch.runner import status

    settings = Settings()
    out.print_json(data=status(Registry.from_settings(settings), settings, run_id))


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


# -- mmserve endpoints ----------------------------------------------------------------------

endpoints_app = typer.Typer(
    help="Endpoints: weighted variants, shadows, capture, pipelines; shift, roll back, compare.",
    no_args_is_help=True,
)
app.add_typer(endpoints_app, name="endpoints")

Servers = Annotated[
    list[str],
    typer.Option(
        "--server",
        help="A server whose /metrics the guardrails read; repeat for each.",
        show_default=DEFAULT_URL,
    ),
]
MaxErrorRate = Annotated[
    float, typer.Option(min=0, max=1, help="Roll back when the new side's 5xx rate passes it.")
]
MaxP99Ms = Annotated[
    float | None, typer.Option(min=0, help="Roll back when the new side's p99 passes it (ms).")
]
MinRequests = Annotated[
    int, typer.Option(min=1, help="Requests the new side answers before guardrails judge it.")
]
Interval = Annotated[float, typer.Option(min=0.05, help="Seconds between metrics reads.")]


def _endpoints_store() -> Any:
    from serving.endpoints.catalog import Endpoints
    from serving.store import Store

    settings = Settings()
    return Endpoints(Store.from_url(settings.store_url, settings.aws))


@endpoints_app.command("apply")
@_reports_errors
def endpoints_apply(
    file: Annotated[Path, typer.Argument(help="The endpoints YAML file.")],
    check: Annotated[
        bool, typer.Option(help="Refuse references to models the registry does not have.")
    ] = True,
) -> None:
    """Validate FILE and write its endpoints to the store (servers follow within
    MMSERVE_DEPLOYMENT__STATE_TTL_S). Live weights survive unless FILE changes them."""
    from serving.endpoints import files

    declared = files.load(file)
    registry = _registry()
    if check:
        for name, endpoint in declared.endpoints.items():
            refs = [r for v in endpoint.production_variants for r in v.steps]
            for ref in [*refs, *([endpoint.shadow.model] if endpoint.shadow else [])]:
                try:
                    registry.resolve(ref)
                except MMServeError as e:
                    _fail(f"endpoint {name!r}: {e.message} (--no-check applies it anyway)")
    changed = _endpoints_store().apply(declared)
    for name in declared.endpoints:
        out.print(f"{name}: {'applied' if name in changed else 'unchanged'}", highlight=False)


@endpoints_app.command("list")
@_reports_errors
def endpoints_list() -> None:
    """Every endpoint: mode, variants and their share of traffic, shadow, rollout."""
    from serving.endpoints.state import percentages

    table = Table("name", "mode", "variants", "shadow", "rollout")
    for name, served in sorted(_endpoints_store().snapshot().items()):
        shares = percentages(served.state.weights)
        variants = ", ".join(f"{v} {share:g}%" for v, share in shares.items())
        rollout = served.state.rollout
        table.add_row(
            name,
            served.config.mode,
            variants,
            served.config.shadow.model if served.config.shadow else "",
            f"{rollout.kind} to {rollout.target}: {rollout.share:g}%" if rollout else "",
        )
    out.print(table)


@endpoints_app.command("show")
@_reports_errors
def endpoints_show(
    name: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """An endpoint's variants and live weights, its rollout's progress, the last decision."""
    from serving.endpoints.catalog import dumps
    from serving.endpoints.state import percentages

    served = _endpoints_store().served(name)
    if as_json:
        typer.echo(dumps(served))
        return
    state, config = served.state, served.config
    shares = percentages(state.weights)
    out.print(f"[bold]{name}[/bold] ({config.mode}, generation {state.generation})")
    for variant in config.production_variants:
        weight = state.weights.get(variant.name, 0.0)
        models = ", ".join(variant.steps)
        share = shares.get(variant.name, 0.0)
        out.print(f"  {variant.name}: {models}  weight {weight:g} ({share:.1f}%)", highlight=False)
    if config.shadow:
        out.print(f"  shadow: {config.shadow.model} (sample {config.shadow.sample:g})")
    if state.rollout:
        r = state.rollout
        out.print(
            f"rollout: {r.kind} to {r.target}, {r.strategy}: step {r.step}/{r.steps}, "
            f"{r.share:g}% (since {_when(r.started)}, by {r.owner})",
            highlight=False,
        )
    if state.last:
        d = state.last
        out.print(
            f"last decision: {d.outcome} {d.kind} to {d.target} at {_when(d.at)}: {d.reason}",
            highlight=False,
        )


@endpoints_app.command("shift")
@_reports_errors
def endpoints_shift(
    name: str,
    to: Annotated[str, typer.Option(help="The variant the traffic moves to.")],
    strategy: Annotated[
        str,
        typer.Option(help="all-at-once | canary:10%,wait=5m | linear:20%,every=1m [,bake=D]"),
    ] = "all-at-once",
    max_error_rate: MaxErrorRate = 0.01,
    max_p99_ms: MaxP99Ms = None,
    min_requests: MinRequests = 10,
    server: Servers = [],  # noqa: B006
    interval: Interval = 1.0,
) -> None:
    """Move NAME's traffic to a variant step by step; on a guardrail breach put it back at
    once, record why and exit 1. Servers follow within MMSERVE_DEPLOYMENT__STATE_TTL_S."""
    controller = _controller(server, max_error_rate, max_p99_ms, min_requests, interval)
    _decided(controller.shift(name, to, strategy))


@endpoints_app.command("rollback")
@_reports_errors
def endpoints_rollback(name: str) -> None:
    """End NAME's rollout with its weights as they were before it (or undo the last shift)."""
    from serving.endpoints.rollout import rollback

    decision = rollback(_endpoints_store(), name)
    out.print(f"{name}: rolled back {decision.kind} to {decision.target}", highlight=False)


@endpoints_app.command("compare")
@_reports_errors
def endpoints_compare(
    name: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Primary vs shadow, from the capture: agreement, score deltas, latency."""
    from serving.endpoints.compare import compare

    report = compare(_endpoints_store().store, name)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    agreement = report["agreement"]
    shown = "n/a" if agreement is None else f"{agreement:.2%}"
    out.print(f"{name}: {report['pairs']} rows answered by both; labels agree {shown}")
    for column, delta in report["deltas"].items():
        out.print(f"  {column}: mean |Δ| {delta['mean_abs']:.4g}, max |Δ| {delta['max_abs']:.4g}")
    for side in ("primary", "shadow"):
        s = report[side]
        out.print(
            f"  {side}: {', '.join(s['models'])}: {s['requests']} requests, {s['errors']} "
            f"failed, p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms",
            highlight=False,
        )


@endpoints_app.command("batch")
@_reports_errors
def endpoints_batch(
    name: str,
    input: Annotated[str, typer.Option(help="A file, folder or glob; a path or s3://...")],
    output: Annotated[str, typer.Option(help="A folder; a path or s3://...")],
    variant: Annotated[
        str | None, typer.Option(help="The variant to score with.", show_default="the busiest")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="Input column kept in the output.")] = None,
    on_error: Annotated[
        Literal["fail", "skip"], typer.Option(help="A bad row stops the run, or goes to _rejects/.")
    ] = "fail",
) -> None:
    """Score a dataset with one of NAME's variants (the one with the most traffic now unless
    --variant), as `mmserve batch run` does; its version (a pipeline: each step's) is pinned
    at start."""
    from batch.runner import run_batch
    from batch.spec import BatchSpec
    from serving import scorers
    from serving.errors import VariantNotFound

    served = _endpoints_store().served(name)
    variants = served.config.production_variants
    weights = served.state.weights
    chosen = (
        served.config.variant(variant)
        if variant
        else max(variants, key=lambda v: weights.get(v.name, 0.0))
    )
    if chosen is None:
        raise VariantNotFound(name, str(variant), [v.name for v in variants])
    spec = BatchSpec(
        model=scorers.join(chosen.steps),
        input=input,
        output=output,
        id_column=id_column,
        on_error=on_error,
    )
    settings = Settings()
    manifest = run_batch(spec, Registry.from_settings(settings), settings)
    err.print(
        f"{manifest['rows']} rows scored by {name}/{chosen.name} ({manifest['model']}) → {output}",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(manifest["run_id"])


def _controller(
    servers: list[str],
    max_error_rate: float,
    max_p99_ms: float | None,
    min_requests: int,
    interval: float,
) -> Any:
    from serving.endpoints.guardrails import Guardrails
    from serving.endpoints.rollout import Controller

    guardrails = Guardrails(max_error_rate, max_p99_ms, min_requests)
    return Controller(
        _endpoints_store(),
        servers or [DEFAULT_URL],
        guardrails,
        poll_s=interval,
        report=lambda message: err.print(message, highlight=False, soft_wrap=True),
    )


def _decided(decision: Any) -> None:
    """Print how a rollout ended; a rollback ends the command with exit 1."""
    if decision.outcome != "completed":
        _fail(f"rolled back {decision.kind} to {decision.target}: {decision.reason}")
    out.print(f"completed: {decision.kind} to {decision.target}", highlight=False)


def _promote(
    registry: Registry,
    name: str,
    alias: str,
    version: int,
    strategy: str,
    force: bool,
    controller: Any,
) -> None:
    """``models alias --rollout``: the alias moved through a guarded rollout of the
    endpoints that serve it; left where it was on a rollback."""
    from serving.errors import AliasNotFound, NotApproved

    mv = registry.get(f"{name}:{version}")
    if alias in registry.settings.protected_aliases and mv.approval != "approved" and not force:
        raise NotApproved(mv.ref, mv.approval, alias)  # before any request goes to it
    current = registry.aliases(name).get(alias)
    if current is None:
        raise AliasNotFound(name, alias)
    if current == version:
        out.print(f"{name}@{alias} is already {name}:{version}")
        return
    settings = Settings()
    settle_s = settings.registry.alias_ttl_s + settings.deployment.state_ttl_s
    decision = controller.promote(
        name,
        alias,
        current,
        version,
        strategy,
        lambda: registry.set_alias(name, alias, version, force=force),
        settle_s,
    )
    _decided(decision)
    out.print(f"{name}@{alias} → {name}:{version}")


# -- mmserve stream -------------------------------------------------------------------------


@app.command("stream")
@_reports_errors
def stream(
    model: Annotated[str, typer.Option(help="Model reference: name, name:version, name@alias.")],
    source: Annotated[str, typer.Option(help="The stream of events (a Redis key).")],
    sink: Annotated[str, typer.Option(help="The stream the outputs are added to.")],
    group: Annotated[str, typer.Option(help="Consumer group: its consumers share the events.")],
    consumer: Annotated[
        str | None,
        typer.Option(
            help="This consumer's name in the group; restarted under it, a consumer first "
            "finishes what it left. One per process.",
            show_default="the host name",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Most events per model call.", show_default="256"),
    ] = None,
    max_wait_ms: Annotated[
        float | None,
        typer.Option(min=0, help="Longest an event waits for its batch to fill.", show_default="5"),
    ] = None,
    id_field: Annotated[
        str | None, typer.Option(help="Event field copied to each output (required in events).")
    ] = None,
    dead_letter: Annotated[
        str | None,
        typer.Option(help="The stream of events that cannot be scored.", show_default="SINK-dlq"),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    start: Annotated[
        Literal["$", "0"] | None,
        typer.Option(help="Where a new group starts: '$' new events, 0 the whole stream."),
    ] = None,
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--pin",
            help="Score with the version an alias points at now (moves picked up between "
            "batches), or pin the version it named at start.",
            show_default="--follow",
        ),
    ] = None,
    json_field: Annotated[
        str | None, typer.Option(help="Event field holding a JSON object of the features.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Score a Redis stream's events as they arrive, in micro-batches, each output written
    once and atomically with its event's acknowledgement. SIGTERM: the batch in hand is
    finished and committed, then the command exits 0."""
    import logging
    import signal
    import socket
    import threading

    from serving.logs import JsonFormatter
    from serving.settings import StreamSettings
    from workers.stream import Names, serve

    settings = Settings()
    if settings.redis is None:
        _fail("MMSERVE_REDIS_URL (or MMSERVE_BROKER_URL) is not set: streaming needs Redis", 2)
    given = {
        "batch_size": batch_size, "max_wait_ms": max_wait_ms, "id_field": id_field,
        "metrics_port": metrics_port, "start": start, "follow": follow, "json_field": json_field,
    }  # fmt: skip
    options = StreamSettings.model_validate(
        {**settings.stream.model_dump(), **{k: v for k, v in given.items() if v is not None}}
    )
    dead_letter = dead_letter or f"{sink}-dlq"
    names = Names(source, sink, dead_letter, group, consumer or socket.gethostname())
    if len({names.source, names.sink, names.dead_letter}) < 3:
        _fail("--source, --sink and --dead-letter must be three different streams", 2)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger("mmserve").addHandler(handler)
    logging.getLogger("mmserve").setLevel(log_level.upper())
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():  # asked twice: leave now; the batch in hand stays pending (claimed later)
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(settings, options, names, model, stop)


# -- mmserve advise -------------------------------------------------------------------------

if TYPE_CHECKING:
    from serving.advise import Advice


@app.command("advise")
@_reports_errors
def advise_mode(
    latency_ms: Annotated[
        float | None, typer.Option(help="How soon an answer is needed, in ms.")
    ] = None,
    payload_mb: Annotated[
        float | None, typer.Option(help="Size of one request (or event), in MB.")
    ] = None,
    rps: Annotated[
        float | None, typer.Option(help="Requests (rows, events) a second, over a month.")
    ] = None,
    pattern: Annotated[
        Literal["steady", "spiky", "rare"] | None,
        typer.Option(help="How requests come: steady, spiky (bursts), rare (long pauses)."),
    ] = None,
    processing_s: Annotated[
        float | None, typer.Option(help="Model time per request, in seconds.")
    ] = None,
    waiting: Annotated[
        bool | None,
        typer.Option("--waiting/--no-waiting", help="Whether someone waits for each answer."),
    ] = None,
    input: Annotated[
        Literal["requests", "dataset", "events"] | None,
        typer.Option(help="Requests one by one, a dataset to score whole, or a stream of events."),
    ] = None,
    models: Annotated[
        int, typer.Option(min=1, help="Distinct models served (>1: a multi-model endpoint).")
    ] = 1,
    chain: Annotated[
        int, typer.Option(min=1, help="Models applied in turn per request (>1: a pipeline).")
    ] = 1,
    from_capture: Annotated[
        str | None,
        typer.Option(
            metavar="ENDPOINT",
            help="Read the rate, pattern, payload and latency from the endpoint's data "
            "capture in the store (the flags given override them).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the advice as JSON.")] = False,
) -> None:
    """Which mode fits: real time, serverless, async, batch or streaming, with the reasons,
    the limits that decided it and a rough monthly cost of each (illustrative unit prices:
    MMSERVE_ADVISE__*)."""
    import dataclasses

    from serving.advise import Requirements, advise, read_traffic

    given = {
        "latency_ms": latency_ms, "payload_mb": payload_mb, "rps": rps, "pattern": pattern,
        "processing_s": processing_s, "waiting": waiting, "input": input,
    }  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    if not given and from_capture is None:
        _fail("give a requirement (--latency-ms, --payload-mb, --rps, --pattern, ...) or "
              "--from-capture ENDPOINT", 2)  # fmt: skip
    settings = Settings()
    traffic = None
    if from_capture is not None:
        traffic = read_traffic(Registry.from_settings(settings).store, from_capture, settings)
        given = {**traffic.requirements(), **given}
    try:
        req = Requirements(**given, models=models, chain=chain)
    except ValidationError as e:
        problems = [f"--{str(p['loc'][0]).replace('_', '-')}: {p['msg']}" for p in e.errors()]
        _fail("; ".join(problems), 2)
    advice = advise(req, settings)
    if traffic is not None:
        advice = dataclasses.replace(advice, traffic=traffic.to_json())
    if as_json:
        typer.echo(json.dumps(advice.to_json(), indent=2))
        return
    _print_advice(advice)


def _print_advice(advice: Advice) -> None:
    """The advice for a person: the traffic read, the mode and why, every mode compared."""
    from serving.advise.model import duration, money, size

    if advice.traffic is not None:
        t = advice.traffic
        out.print(
            f"endpoint {t['endpoint']}: {t['requests']:,} requests captured (sample "
            f"{t['sample']:.0%}), {t['pattern']}: {t['why']}; latency p50 "
            f"{t['latency_p50_ms']:.1f} ms, p99 {t['latency_p99_ms']:.1f} ms",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"[bold]mode: {advice.mode}[/] ({', '.join(advice.decided_by)})", highlight=False)
    for reason in advice.reasons:
        out.print(f"  - {escape(reason)}", highlight=False)
    table = Table("mode", "fits", "payload", "timeout", "to zero", "billing", "per month")
    for view in advice.modes:
        limits = advice.limits[view.mode]
        table.add_row(
            f"[bold]{view.mode}[/]" if view.mode == advice.mode else view.mode,
            "yes" if view.fits else "[red]no[/]",
            "-" if limits.max_payload_mb is None else size(limits.max_payload_mb),
            "-" if limits.timeout_s is None else duration(limits.timeout_s),
            "yes" if view.scales_to_zero else "no",
            view.billing,
            "-" if view.monthly_usd is None else money(view.monthly_usd),
        )
    out.print(table)
    for note in advice.notes:
        out.print(f"[dim]{escape(note)}[/]", highlight=False)
