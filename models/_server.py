"""The demo's server: a real ``mmserve serve`` process on a free loopback port, and the few
HTTP calls the demo makes to it, in the standard library (httpx is a dev dependency only).

With no ``MMSERVE_BROKER_URL`` the server runs asynchronous jobs in its own process
(embedded mode), so the demo needs no Redis. Batch runs need the admin token (the one set,
or a random one for this server) and read and write under the temporary folder, which the
server allows (``MMSERVE_BATCH__ROOTS``) besides the store.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import pyarrow as pa
import pyarrow.csv as pacsv

from serving.settings import Settings

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
JOB_TIMEOUT_S = 60.0
JSON = "application/json"
CSV = "text/csv"
Headers = dict[str, str]
Predictions = list[dict[str, Any]]
"""An answer's rows: each a dict of output name to value, as V1 answers them."""
_LOG_TAIL_LINES = 20


class DemoError(Exception):
    """The demo could not show what it set out to: a server that would not start, an
    answer that differs between modes, a job that did not finish."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, with the time from sending the request to reading the whole body."""

    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    ms: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def cold(self) -> bool:
        """The request loaded its model (a cold start)."""
        return self.headers.get("x-mmserve-cold-start") == "true"


class Server:
    """A running ``mmserve serve``; :func:`serve` starts and stops it."""

    def __init__(self, url: str, auth: Headers, admin: Headers | None = None) -> None:
        self.url = url
        self._auth = auth
        self._admin = admin or {}

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Headers | None = None,
        timeout: float = 60,
    ) -> Reply:
        """Send one request; an error status is a :class:`Reply` too, not an exception."""
        request = Request(self.url + path, body, {**self._auth, **(headers or {})}, method=method)
        started = time.perf_counter()
        try:
            with urlopen(request, timeout=timeout) as answer:
                status, head, content = answer.status, answer.headers, answer.read()
        except HTTPError as err:
            with err:
                status, head, content = err.code, err.headers, err.read()
        ms = (time.perf_counter() - started) * 1000
        return Reply(status, {k.lower(): v for k, v in head.items()}, content, ms)

    def post_json(self, path: str, document: Any) -> Reply:
        return self.request("POST", path, json.dumps(document).encode(), {"Content-Type": JSON})

    # -- real time: each protocol's request for ``rows`` (feature columns only), and its
    # answer as rows of outputs by name (``None`` when the status is not 200)

    def predict_v1(self, ref: str, rows: pa.Table) -> tuple[Reply, Predictions | None]:
        """Native / KServe V1: instances as objects by feature name."""
        reply = self.post_json(f"/v1/models/{ref}:predict", {"instances": rows.to_pylist()})
        return reply, reply.json()["predictions"] if reply.status == 200 else None

    def infer_v2(self, name: str, rows: pa.Table) -> tuple[Reply, Predictions | None]:
        """Open Inference Protocol: one tensor per feature, named after it."""
        inputs = [_tensor(name, rows[name]) for name in rows.column_names]
        reply = self.post_json(f"/v2/models/{name}/infer", {"inputs": inputs})
        if reply.status != 200:
            return reply, None
        outputs = reply.json()["outputs"]
        columns = [output["data"] for output in outputs]
        names = [output["name"] for output in outputs]
        return reply, [
            dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)
        ]

    def invoke_sagemaker(
        self, name: str, rows: pa.Table, outputs: list[str]
    ) -> tuple[Reply, Predictions | None]:
        """SageMaker: headerless CSV in and out, the model named in a header."""
        body = _csv(rows, header=False)
        headers = {"Content-Type": CSV, "Accept": CSV, "X-Amzn-SageMaker-Target-Model": name}
        reply = self.request("POST", "/invocations", body, headers)
        if reply.status != 200:
            return reply, None
        options = pacsv.ReadOptions(column_names=outputs)
        return reply, pacsv.read_csv(pa.BufferReader(reply.body), options).to_pylist()

    # -- asynchronous jobs

    def submit_job(self, ref: str, rows: pa.Table) -> Reply:
        """A CSV job, with a header row of feature names; the answer asked for in JSON."""
        body = _csv(rows, header=True)
        headers = {"Content-Type": CSV, "Accept": JSON}
        return self.request("POST", f"/v1/models/{ref}/async", body, headers)

    def wait_job(self, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        """The job's status once it finished, or as it was when ``timeout_s`` ran out."""
        deadline = time.monotonic() + timeout_s
        while True:
            view: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}").json()
            if view["status"] not in ("queued", "running") or time.monotonic() > deadline:
                return view
            time.sleep(0.01)

    # -- batch transform (the admin token's)

    def start_batch(self, spec: dict[str, Any]) -> Reply:
        body = json.dumps(spec).encode()
        return self.request("POST", "/v1/batch-jobs", body, {"Content-Type": JSON, **self._admin})

    def wait_batch(self, status_url: str, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, Any]:
        """The run's status once it stopped running, or as it was when ``timeout_s`` ran out."""
        path = urlparse(status_url).path
        deadline = time.monotonic() + timeout_s
        while True:
            view: dict[str, Any] = self.request("GET", path, headers=self._admin).json()
            if view["status"] != "running" or time.monotonic() > deadline:
                return view
            time.sleep(0.02)

    def job_result(self, job_id: str) -> tuple[Reply, Predictions | None]:
        reply = self.request("GET", f"/v1/jobs/{job_id}/result")
        return reply, reply.json()["predictions"] if reply.status == 200 else None


_V2_DATATYPES = {pa.int64(): "INT64", pa.float64(): "FP64", pa.string(): "BYTES"}


def _tensor(name: str, column: pa.ChunkedArray) -> dict[str, Any]:
    datatype = _V2_DATATYPES[column.type]
    return {"name": name, "shape": [len(column)], "datatype": datatype, "data": column.to_pylist()}


def _csv(rows: pa.Table, header: bool) -> bytes:
    """``rows`` as CSV; Arrow writes each float's shortest exact form, so it reads back equal."""
    sink = io.BytesIO()
    pacsv.write_csv(rows, sink, pacsv.WriteOptions(include_header=header))
    return sink.getvalue()


@contextmanager
def serve(settings: Settings) -> Iterator[Server]:
    """``mmserve serve`` on the demo's store, ready to answer; stopped however the block
    ends (an error, Ctrl-C, or SIGTERM, which is turned into a normal exit meanwhile)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MMSERVE_BROKER_URL"}
    env["MMSERVE_STORE_URL"] = settings.store_url
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    env["MMSERVE_ADMIN_TOKEN"] = admin = admin or secrets.token_urlsafe(24)
    env["MMSERVE_BATCH__ROOTS"] = json.dumps([*settings.batch.roots, tempfile.gettempdir()])
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    argv = [mmserve, "serve", "--port", str(port), "--log-level", "warning"]
    previous = signal.signal(signal.SIGTERM, _exit)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            admin_auth = {"Authorization": f"Bearer {admin}"}
            server = Server(f"http://127.0.0.1:{port}", _auth(settings), admin_auth)
            _wait_ready(server, process, log)
            yield server
        finally:
            _stop(process)
            signal.signal(signal.SIGTERM, previous)


def _wait_ready(server: Server, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        try:
            if server.request("GET", "/v2/health/ready", timeout=1).status == 200:
                return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise DemoError(
                f"mmserve serve was not ready within {START_TIMEOUT_S:.0f} s{_tail(log)}"
            )
        time.sleep(0.05)
    raise DemoError(f"mmserve serve exited with code {process.returncode} at start{_tail(log)}")


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
    if not lines:
        return " and printed nothing"
    return "; its last output:\n" + "\n".join(f"  {line}" for line in lines)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _auth(settings: Settings) -> Headers:
    """The API key the server (reading the same environment) will ask for, if any."""
    if settings.api_key is None:
        return {}
    return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
