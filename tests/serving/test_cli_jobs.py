"""``mmserve worker``, ``beat`` and ``jobs``: workers on a real Redis, ``jobs recover`` on a
real store, and the ``jobs`` HTTP client against a stand-in for the job routes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from serving import codecs
from serving.cli import app
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.services import free_port
from workers.jobs import Job, Jobs, Status, key, new_token, now

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
TOKEN = "0123456789abcdef0123456789abcdef"


# -- jobs on a real store -------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A local store with ``churn:1`` registered (the logistic test model)."""
    store = Store.from_url(str(tmp_path / "store"))
    x, _ = fixtures.numeric_data(5)
    Registry(store).register(
        fixtures.logistic(), name="churn", input_example=fixtures.numeric_table(x)
    )
    return store


def rows() -> bytes:
    x, _ = fixtures.numeric_data(3, seed=11)
    return codecs.encode(fixtures.numeric_table(x), codecs.CSV)


def submitted(store: Store, **fields: Any) -> str:
    """A job as the server stores it at submit (its input, then its record), no message sent."""
    token = new_token()
    store.write(key(token, "input"), rows())
    job = Job(
        id=token,
        model="churn:1",
        requested="churn",
        content_type=codecs.CSV,
        accept=codecs.JSON,
        input_key=key(token, "input"),
        created_at=now(),
        time_limit_s=60,
        **fields,
    )
    Jobs(store).create(job)
    return token


def expected_answer() -> dict[str, Any]:
    """The model's answer to ``rows()``, from scikit-learn itself."""
    x = codecs.decode(rows(), codecs.CSV).select(fixtures.FEATURES).to_pandas().to_numpy()
    model = fixtures.logistic()
    return {
        "predictions": [
            {"label": int(label), "proba_0": p0, "proba_1": p1}
            for label, (p0, p1) in zip(model.predict(x), model.predict_proba(x), strict=True)
        ]
    }


def test_recover_runs_lost_jobs_in_this_process_and_waits_for_them(store: Store) -> None:
    lost = submitted(store)
    expired = submitted(store, expires_at=now() - timedelta(minutes=1))
    closed = submitted(store, status=Status.CANCELLED, finished_at=now())
    order = Jobs(store).open_tokens()
    env = {
        "MMSERVE_STORE_URL": store.url,
        "MMSERVE_BROKER_URL": None,
        "MMSERVE_JOBS__SWEEP_GRACE_S": "0",
    }

    result = CliRunner().invoke(app, ["jobs", "recover"], env=env, catch_exceptions=False)

    ends = {lost: "succeeded", expired: "failed", closed: "cancelled"}
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "3 open: 1 enqueued, 1 expired, 1 closed\n" + "".join(
        f"{token} {ends[token]}\n" for token in order
    )
    jobs = Jobs(store)
    assert (jobs.get(lost).status, jobs.get(lost).attempts) == (Status.SUCCEEDED, 1)
    assert json.loads(store.read(key(lost, "output"))) == expected_answer()
    error = jobs.get(expired).error
    assert error is not None and error.type == "Expired"
    assert jobs.open_tokens() == []


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_need_a_broker(command: str) -> None:
    result = CliRunner().invoke(app, [command], env={"MMSERVE_BROKER_URL": None})
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: MMSERVE_BROKER_URL is not set: workers need a Redis broker (redis://host:6379/0)\n"
    )


# -- workers on a real Redis ----------------------------------------------------------------


@dataclass
class Deployment:
    """Settings shared by the processes of one test: the store, Redis, a queue of its own."""

    store: Store
    env: dict[str, str]
    workdir: Path

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.workdir.parent / f"{args[0]}-{uuid.uuid4().hex[:6]}.log").open("wb")
        with log:
            return subprocess.Popen(
                [MMSERVE, *args],
                env={**os.environ, **self.env},
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        return "".join(p.read_text() for p in self.workdir.parent.glob("*.log"))


@pytest.fixture
def deployment(store: Store, redis_url: str, tmp_path: Path) -> Deployment:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {
        "MMSERVE_STORE_URL": store.url,
        "MMSERVE_BROKER_URL": redis_url,
        "MMSERVE_JOBS__QUEUE": f"mmserve.test.{uuid.uuid4().hex}",
        "MMSERVE_JOBS__SWEEP_GRACE_S": "0",
        "MMSERVE_JOBS__SWEEP_INTERVAL_S": "0.5",
    }
    return Deployment(store, env, workdir)


def finished(deployment: Deployment, token: str, seconds: float = 60) -> Job:
    deadline = time.monotonic() + seconds
    while not (job := Jobs(deployment.store).get(token)).status.finished:
        assert time.monotonic() < deadline, f"job still {job.status}\n{deployment.logs()}"
        time.sleep(0.1)
    return job


def stop_softly(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()  # -9, and the caller's assertion shows the logs


@pytest.mark.slow
def test_recover_hands_lost_jobs_to_a_worker(deployment: Deployment) -> None:
    token = submitted(deployment.store)
    worker = deployment.start("worker", "--pool", "solo", "--loglevel", "warning")
    try:
        recovered = subprocess.run(
            [MMSERVE, "jobs", "recover"],
            env={**os.environ, **deployment.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (recovered.returncode, recovered.stdout) == (
            0,
            "1 open: 1 enqueued, 0 expired, 0 closed\n",
        ), recovered.stderr
        assert finished(deployment, token).status is Status.SUCCEEDED
        assert json.loads(deployment.store.read(key(token, "output"))) == expected_answer()
    finally:
        assert stop_softly(worker) == 0, deployment.logs()


@pytest.mark.slow
@pytest.mark.parametrize(
    "processes",
    [[["worker", "--beat", "--concurrency", "1"]], [["beat"], ["worker", "--pool", "threads"]]],
    ids=["worker --beat", "beat + worker"],
)
def test_the_periodic_sweep_hands_lost_jobs_to_a_worker(
    deployment: Deployment, processes: list[list[str]]
) -> None:
    token = submitted(deployment.store)
    started = [deployment.start(*args, "--loglevel", "info") for args in processes]
    try:
        assert finished(deployment, token).status is Status.SUCCEEDED
    finally:
        assert [stop_softly(p) for p in started] == [0] * len(started), deployment.logs()
    assert list(deployment.workdir.iterdir()) == []  # no beat schedule file in the CWD


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="a parent-death signal is Linux's")
def test_a_worker_killed_with_sigkill_takes_its_embedded_beat_with_it(
    deployment: Deployment,
) -> None:
    token = submitted(deployment.store)
    worker = deployment.start("worker", "--beat", "--concurrency", "1", "--loglevel", "info")
    try:
        assert finished(deployment, token).status is Status.SUCCEEDED  # the beat swept it
        children = children_of(worker.pid)
        assert len(children) == 2, children  # the pool's process and the beat
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 10
    while alive := [pid for pid in children if running(pid)]:
        assert time.monotonic() < deadline, f"{alive} outlived the worker\n{deployment.logs()}"
        time.sleep(0.1)


def children_of(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


# -- the jobs client ------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class JobRoutes:
    """A stand-in for the job routes of ``mmserve serve``: canned answers per request (the
    last one repeats), and the requests it saw."""

    url: str = ""
    answers: dict[tuple[str, str], list[tuple[int, bytes]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def answer(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.answers[(method, path)] = [
            (status, body if isinstance(body, bytes) else json.dumps(body).encode())
            for status, body in answers
        ]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        routes = self

        class Handler(BaseHTTPRequestHandler):
            def reply(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                routes.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                answers = routes.answers[(self.command, self.path)]
                status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def routes() -> Iterator[JobRoutes]:
    routes = JobRoutes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), routes.handler())
    routes.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield routes
    server.shutdown()
    server.server_close()
    thread.join()


def jobs(url: str, *args: str) -> Result:
    return CliRunner().invoke(
        app,
        ["jobs", *args, "--url", url],
        env={"MMSERVE_API_KEY": None, "MMSERVE_URL": None},
        catch_exceptions=False,
    )


def record(status: str, error: dict[str, str] | None = None) -> dict[str, Any]:
    return {"job_id": TOKEN, "status": status, "model": "churn:1", "error": error}


ACCEPTED = {
    "job_id": TOKEN,
    "status": "queued",
    "status_url": f"/v1/jobs/{TOKEN}",
    "result_url": f"/v1/jobs/{TOKEN}/result",
    "output_location": f"/store/jobs/{TOKEN}/output",
    "failure_location": f"/store/jobs/{TOKEN}/error.json",
}


def test_submit_uploads_the_file_and_prints_the_job_id(routes: JobRoutes, tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_bytes(rows())
    routes.answer("POST", "/v1/models/churn@production/async", (202, ACCEPTED))

    result = jobs(
        routes.url,
        "submit",
        "churn@production",
        str(tmp_path / "rows.csv"),
        "--accept",
        "application/json",
        "--callback-url",
        "http://hooks.example/done",
        "--idempotency-key",
        "order-17",
        "--api-key",
        "s3cret",
    )

    assert (result.exit_code, result.stdout) == (0, f"{TOKEN}\n")
    assert result.stderr == f"status: {routes.url}/v1/jobs/{TOKEN}\n"
    [seen] = routes.seen
    assert seen.body == rows()
    urllib_own = ("Host", "Connection", "Accept-Encoding", "User-Agent")
    assert {k: v for k, v in seen.headers.items() if k not in urllib_own} == {
        "Content-Type": "text/csv",
        "Content-Length": str(len(rows())),
        "Accept": "application/json",
        "X-Callback-Url": "http://hooks.example/done",
        "Idempotency-Key": "order-17",
        "Authorization": "Bearer s3cret",
    }


def test_submit_with_output_waits_and_writes_the_result(routes: JobRoutes, tmp_path: Path) -> None:
    (tmp_path / "rows.parquet").write_bytes(b"PAR1 not read by the client PAR1")
    routes.answer("POST", "/v1/models/churn/async", (202, ACCEPTED))
    routes.answer("GET", f"/v1/jobs/{TOKEN}", (200, record("running")), (200, record("succeeded")))
    routes.answer("GET", f"/v1/jobs/{TOKEN}/result", (200, b"1,0.25,0.75\n"))

    result = jobs(
        routes.url, "submit", "churn", str(tmp_path / "rows.parquet"), "-o", str(tmp_path / "out")
    )

    assert (result.exit_code, result.stdout) == (0, f"{TOKEN}\n")
    assert result.stderr == (
        f"status: {routes.url}/v1/jobs/{TOKEN}\njob {TOKEN} succeeded → {tmp_path / 'out'}\n"
    )
    assert (tmp_path / "out").read_bytes() == b"1,0.25,0.75\n"
    assert routes.seen[0].headers["Content-Type"] == "application/x-parquet"
    assert [s.method for s in routes.seen] == ["POST", "GET", "GET", "GET"]


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("scan.png", "image/png"),
        ("note.txt", "text/plain"),
        ("blob.zzz", "application/octet-stream"),
    ],
)
def test_submit_of_a_file_that_is_no_table_sends_its_own_media_type(
    routes: JobRoutes, tmp_path: Path, name: str, sent: str
) -> None:
    """A file of no table format is a file job (a model of one binary or text input takes
    it): sent with the media type its suffix says, or as bytes."""
    (tmp_path / name).write_bytes(b"\x89PNG not read by the client")
    routes.answer("POST", "/v1/models/upscale/async", (202, ACCEPTED))
    result = jobs(routes.url, "submit", "upscale", str(tmp_path / name))
    assert (result.exit_code, result.stdout) == (0, f"{TOKEN}\n")
    assert routes.seen[0].headers["Content-Type"] == sent


def test_status_prints_the_record(routes: JobRoutes) -> None:
    routes.answer("GET", f"/v1/jobs/{TOKEN}", (200, record("running")))
    result = jobs(routes.url, "status", TOKEN)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == record("running")


def test_result_streams_bytes_to_stdout_unchanged(routes: JobRoutes) -> None:
    answer = b"PAR1\x00\xff\xfe binary \r\n PAR1"
    routes.answer("GET", f"/v1/jobs/{TOKEN}/result", (200, answer))
    result = jobs(routes.url, "result", TOKEN, "--accept", "application/x-parquet")
    assert (result.exit_code, result.stdout_bytes) == (0, answer)
    assert routes.seen[0].headers["Accept"] == "application/x-parquet"


def test_wait_polls_until_the_job_succeeded(routes: JobRoutes) -> None:
    routes.answer(
        "GET",
        f"/v1/jobs/{TOKEN}",
        (200, record("queued")),
        (200, record("running")),
        (200, record("succeeded")),
    )
    result = jobs(routes.url, "wait", TOKEN, "--interval", "0.01")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", f"job {TOKEN} succeeded\n")
    assert len(routes.seen) == 3


@pytest.mark.parametrize(
    ("ended", "stderr"),
    [
        (
            record(
                "failed", {"type": "ModelError", "message": "RuntimeError: weights are corrupt"}
            ),
            f"error: job {TOKEN} failed: ModelError: RuntimeError: weights are corrupt\n",
        ),
        (record("cancelled"), f"error: job {TOKEN} cancelled\n"),
    ],
    ids=["failed", "cancelled"],
)
def test_wait_exits_1_when_the_job_did_not_succeed(
    routes: JobRoutes, tmp_path: Path, ended: dict[str, Any], stderr: str
) -> None:
    routes.answer("GET", f"/v1/jobs/{TOKEN}", (200, ended))
    result = jobs(routes.url, "wait", TOKEN, "-o", str(tmp_path / "out"))
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", stderr)
    assert not (tmp_path / "out").exists()


def test_wait_exits_3_on_timeout(routes: JobRoutes) -> None:
    routes.answer("GET", f"/v1/jobs/{TOKEN}", (200, record("running")))
    started = time.monotonic()
    result = jobs(routes.url, "wait", TOKEN, "--timeout", "0.3", "--interval", "0.05")
    assert (result.exit_code, result.stderr) == (
        3,
        f"error: job {TOKEN} is still running after 0.3s\n",
    )
    assert 0.3 <= time.monotonic() - started < 2
    assert 2 <= len(routes.seen) <= 6  # sleeps of 0.05, 0.075, 0.11...: not a busy loop


def test_cancel_deletes_the_job(routes: JobRoutes) -> None:
    routes.answer("DELETE", f"/v1/jobs/{TOKEN}", (200, record("cancelled")))
    result = jobs(routes.url, "cancel", TOKEN)
    assert (result.exit_code, result.stdout) == (0, f"job {TOKEN} cancelled\n")
    assert [(s.method, s.path) for s in routes.seen] == [("DELETE", f"/v1/jobs/{TOKEN}")]


@pytest.mark.parametrize(
    ("args", "answer", "stderr"),
    [
        (["status", "x"], (404, {"error": "no job 'x'"}), "error: 404 no job 'x'\n"),
        (
            ["result", TOKEN],
            (409, {"error": f"job {TOKEN} is running, it has no result yet"}),
            f"error: 409 job {TOKEN} is running, it has no result yet\n",
        ),
        (
            ["cancel", TOKEN],
            (409, {"error": f"job {TOKEN} already succeeded"}),
            f"error: 409 job {TOKEN} already succeeded\n",
        ),
        (["wait", TOKEN], (401, {"error": "[red]no key[/red]"}), "error: 401 [red]no key[/red]\n"),
        (["status", TOKEN], (502, b"<html>Bad gateway</html>"), "error: 502 Bad Gateway\n"),
    ],
    ids=["404", "409 result", "409 cancel", "401 markup kept", "502 not json"],
)
def test_error_answers_are_one_line_and_exit_1(
    routes: JobRoutes, args: list[str], answer: tuple[int, Any], stderr: str
) -> None:
    method = "DELETE" if args[0] == "cancel" else "GET"
    path = f"/v1/jobs/{args[1]}" + ("/result" if args[0] == "result" else "")
    routes.answer(method, path, answer)
    result = jobs(routes.url, *args)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", stderr)


def test_an_unreachable_server_is_one_line_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = jobs(url, "status", TOKEN)
    refused = OSError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: cannot reach mmserve at {url}: {refused}\n"
