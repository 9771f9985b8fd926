"""``mmserve jobs …``: async jobs on a running server, and the recovery sweep."""

from __future__ import annotations

import contextlib
import json
import mimetypes
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from serving.cli._app import (
    DEFAULT_URL,
    MAX_INTERVAL_S,
    TIMEOUT_S,
    ApiKey,
    ServerUrl,
    app,
    err,
    fail,
    out,
    reports_errors,
)
from serving.codecs import media_type_of
from serving.errors import JobNotFound, UnsupportedFormat
from serving.settings import Settings

if TYPE_CHECKING:
    from workers.queue import LocalQueue
    from workers.runner import Runner


jobs_app = typer.Typer(
    help="Async jobs on a running `mmserve serve`: submit, follow, fetch, cancel; recover.",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")


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
                fail(f"{answer.code} {_message(answer.read(), answer.reason)}")
        except OSError as e:  # refused, unknown host, timed out (URLError or not)
            fail(f"cannot reach mmserve at {self.url}: {getattr(e, 'reason', e)}")
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


def _content_type(file: Path) -> str:
    """A table format by the file's suffix, else the file's own media type (``image/png``)."""
    try:
        return media_type_of(file)
    except UnsupportedFormat:
        return mimetypes.guess_type(file.name)[0] or "application/octet-stream"


@jobs_app.command("submit")
@reports_errors
def submit(
    model: Annotated[str, typer.Argument(help="Model reference: name, name:version, name@alias.")],
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="The rows, or a file (an image...), uploaded as is."
        ),
    ],
    content_type: Annotated[
        str | None,
        typer.Option(
            help="The file's media type.",
            show_default="by suffix: csv, json, jsonl, parquet, arrow; else the file's own "
            "(image/png...), for a model of one binary input",
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
        "Content-Type": content_type or _content_type(file),
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
        fail(
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
            fail(f"job {token} is still {job['status']} after {timeout:g}s", 3)
        time.sleep(min(interval, left))
        interval = min(interval * 1.5, ceiling)
    return job


@jobs_app.command("recover")
@reports_errors
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
