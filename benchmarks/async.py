"""Asynchronous jobs: an mmserve job against a no-op Celery task, and the API's memory.

    .venv/bin/python benchmarks/async.py [--quick]

One throwaway redis-server (no persistence) on a free port, a local-folder store in a
temporary directory, a real ``mmserve serve`` and ``mmserve worker``. The floor is a Celery
app with one task that returns at once (``benchmarks/async/floor.py``), on the same Redis.
Three sections: the round trip of one job, the throughput of many one-row jobs, and the
API's RSS while a 1 GiB CSV payload is submitted. See benchmarks/README.md, "Asynchronous".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import celery
import httpx
import numpy as np
import pyarrow as pa
import sklearn
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from serving.registry import Registry
from serving.store import Store

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
WORK = HERE / ".work"
LOGS = WORK / "logs"
RESULTS = WORK / "async.json"
BIN = Path(sys.executable).parent
FEATURES = 10
MODEL = "lr"
CSV = {"Content-Type": "text/csv"}  # a headerless row, as SageMaker sends it
POLL_S = 0.005  # how often the polling round-trip client asks for its job's status
WAIT_S = 20  # the long-polling client's wait (GET /v1/jobs/{token}?wait=20)
ROUND_TRIP_TARGET = 2.0  # the issue's: an mmserve job's p50 at most this many no-op tasks'
THROUGHPUT_TARGET = 0.7  # and its jobs/s at least this share of theirs
RSS_EVERY_S = 0.05
RSS_TARGET_MIB = 200.0
MIB = 1024 * 1024
# One BLAS/OpenMP thread per process: on 2 cores, the API, the workers, Redis and the
# client already ask for more CPU than there is.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

sys.path.insert(0, str(HERE / "async"))
import floor  # noqa: E402  (benchmarks/async/floor.py: the worker imports it by that name)

console = Console(width=110)


@dataclass(frozen=True)
class Options:
    round_trips: int  # sequential jobs per side, after the warm-up
    warmup: int
    jobs: int  # jobs of the throughput section
    threads: int  # client threads submitting them
    payload_bytes: int  # the big CSV of the memory section


@dataclass(frozen=True)
class Latency:
    """N sequential round trips of one side."""

    side: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    first_ms: float  # the first of the warm-up, on a fresh worker: not in the others


@dataclass(frozen=True)
class Phases:
    """Where one mmserve job's round trip goes (medians), from the client's clock and the
    job record's timestamps (one machine, one clock)."""

    submit_ms: float  # POST sent → 202 received
    to_start_ms: float  # 202 received → started_at (the message, the worker's claim)
    run_ms: float  # started_at → finished_at (read, predict, write, record)
    seen_ms: float  # finished_at → the client's GET says succeeded (polling)


@dataclass(frozen=True)
class Throughput:
    side: str
    jobs: int
    workers: int
    seconds: float  # first submit → last job done
    submit_seconds: float  # first submit → last submit answered
    per_s: float


@dataclass(frozen=True)
class Memory:
    """The API's RSS (VmRSS, MiB) around the upload of one big payload."""

    payload_bytes: int
    status: int
    upload_s: float
    stored_bytes: int  # the input object the API wrote, as a check
    before_mib: float
    peak_mib: float
    growth_mib: float
    hwm_mib: float  # VmHWM: the kernel's own peak since the process started
    after_jobs_mib: float  # the API of the first two sections, after all their jobs
    trace: list[tuple[float, float]]  # (seconds since the POST, MiB) every 50 ms


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


@dataclass
class Stack:
    """What every section needs: the Redis, the store, the environment of mmserve."""

    redis_port: int
    store: Path
    row: bytes  # one CSV row, headerless, as SageMaker sends it
    api_rss_after_jobs: float = 0.0

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    @property
    def mmserve_env(self) -> dict[str, str]:
        return {"MMSERVE_BROKER_URL": self.redis_url(0), "MMSERVE_STORE_URL": str(self.store)}


@dataclass
class Results:
    latency: list[Latency] = field(default_factory=list)
    phases: Phases | None = None  # the long-polling client's
    polled_phases: Phases | None = None  # the polling client's
    throughput: list[Throughput] = field(default_factory=list)
    memory: Memory | None = None


# -- the model -------------------------------------------------------------------------------


def register_model(store: Path) -> bytes:
    """Register ``lr`` (float64 features, so a CSV row needs no cast); one CSV row for it."""
    x, y = make_classification(n_samples=2_000, n_features=FEATURES, random_state=0)
    example = pa.table({f"f{i}": x[:16, i] for i in range(FEATURES)})
    model = LogisticRegression(max_iter=1000).fit(x, y)
    Registry(Store.from_url(str(store))).register(model, name=MODEL, input_example=example)
    return (",".join(f"{v:.4f}" for v in x[0]) + "\n").encode()


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(
    name: str, argv: list[str], env: dict[str, str], ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process in its own group; kill the whole group however we leave."""
    log = LOGS / f"async-{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **ONE_THREAD, **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; {_tail_of(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 90 s; {_tail_of(log)}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    # The group also holds the worker's pool processes.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail_of(log: Path, lines: int = 3) -> str:
    last = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"{log} ends: " + " | ".join(last) if last else f"{log} is empty"


def ensure_redis_server() -> None:
    if shutil.which("redis-server"):
        return
    console.print("redis-server not found: apt-get install -y redis-server")
    install = ["apt-get", "install", "-y", "-q", "redis-server"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(install, capture_output=True, check=True)


def redis(port: int) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no"]
    return started("redis", argv, {}, lambda: _pongs(port))


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def api(stack: Stack, name: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mmserve serve`` on a free port: its base URL and process (the one whose RSS counts:
    with one uvicorn worker, the server runs in it)."""
    base = f"http://127.0.0.1:{free_port()}"
    argv = [str(BIN / "mmserve"), "serve", "--port", base.rsplit(":", 1)[1]]
    argv += ["--log-level", "warning"]
    with started(name, argv, stack.mmserve_env, lambda: _answers(f"{base}/ping")) as process:
        yield base, process


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def mmserve_worker(
    stack: Stack, concurrency: int
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    argv = [str(BIN / "mmserve"), "worker", "--concurrency", str(concurrency)]
    argv += ["--loglevel", "warning"]
    url = stack.redis_url(0)
    return started(f"worker-c{concurrency}", argv, stack.mmserve_env, lambda: _pinged(url))


def floor_worker(
    stack: Stack, concurrency: int
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "celery", "-A", "floor", "worker", "--pool", "prefork"]
    argv += ["--concurrency", str(concurrency), "--loglevel", "warning"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]  # as mmserve's
    url = stack.redis_url(1)
    env = {"FLOOR_REDIS_URL": url, "PYTHONPATH": str(HERE / "async")}
    return started(f"floor-c{concurrency}", argv, env, lambda: _pinged(url))


def _pinged(redis_url: str) -> bool:
    """Whether a worker on ``redis_url`` answers a remote-control ping: its consumer runs."""
    app = Celery("ping", broker=redis_url, set_as_current=False)
    try:
        return bool(app.control.ping(timeout=0.5))
    finally:
        app.close()


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


# -- 1. round trip ---------------------------------------------------------------------------


def latency(side: str, seconds: list[float], warmup: int) -> Latency:
    """The figures of the round trips after the warm-up; and the very first one."""
    ms = np.asarray(seconds[warmup:]) * 1e3
    p50, p99 = np.percentile(ms, [50, 99])
    return Latency(side, len(ms), float(p50), float(p99), float(ms.mean()), seconds[0] * 1e3)


def floor_round_trips(stack: Stack, options: Options) -> Latency:
    """Send a no-op task and ``.get()`` its result, one at a time."""
    app = floor.make_app(stack.redis_url(1))
    times = []
    try:
        for i in range(options.warmup + options.round_trips):
            start = time.perf_counter()
            app.send_task(floor.TASK, args=[i]).get(timeout=30)
            times.append(time.perf_counter() - start)
    finally:
        app.close()
    return latency("celery no-op task", times, options.warmup)


@dataclass(frozen=True)
class Trip:
    """One mmserve job, submitted and polled until it succeeded."""

    seconds: float
    phases: Phases


def mmserve_trip(client: httpx.Client, row: bytes, long_poll: bool) -> Trip:
    """With ``long_poll``, one ``GET ?wait=`` that answers once the job finished (what
    Celery's ``.get()`` does); else a GET every :data:`POLL_S`."""
    sent = time.perf_counter()
    answer = client.post(f"/v1/models/{MODEL}/async", content=row, headers=CSV)
    accepted, accepted_wall = time.perf_counter(), time.time()
    if answer.status_code != 202:
        raise RuntimeError(f"submit answered {answer.status_code}: {answer.text[:200]}")
    status_url = answer.json()["status_url"]
    params = {"wait": WAIT_S} if long_poll else None
    while True:
        if not long_poll:
            time.sleep(POLL_S)
        view = client.get(status_url, params=params).json()
        if view["status"] == "succeeded":
            break
        if view["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {view['job_id']} {view['status']}: {view.get('error')}")
    done, done_wall = time.perf_counter(), time.time()
    started_at, finished_at = _epoch(view["started_at"]), _epoch(view["finished_at"])
    phases = Phases(
        submit_ms=(accepted - sent) * 1e3,
        to_start_ms=(started_at - accepted_wall) * 1e3,
        run_ms=(finished_at - started_at) * 1e3,
        seen_ms=(done_wall - finished_at) * 1e3,
    )
    return Trip(done - sent, phases)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def mmserve_round_trips(
    base: str, stack: Stack, options: Options, long_poll: bool
) -> tuple[Latency, Phases]:
    with httpx.Client(base_url=base, timeout=30) as client:
        trips = [
            mmserve_trip(client, stack.row, long_poll)
            for _ in range(options.warmup + options.round_trips)
        ]
    timed = trips[options.warmup :]
    median = {
        name: float(np.median([getattr(t.phases, name) for t in timed]))
        for name in Phases.__dataclass_fields__
    }
    side = "mmserve job" if long_poll else f"mmserve job, polled every {POLL_S * 1e3:g} ms"
    return latency(side, [t.seconds for t in trips], options.warmup), Phases(**median)


# -- 2. throughput ---------------------------------------------------------------------------


def in_threads(count: int, workers: list[Callable[[int], None]]) -> None:
    """Share ``count`` between ``workers``, each called with its share in a thread of its
    own; an error in a thread is raised here."""
    errors: list[BaseException] = []

    def guarded(work: Callable[[int], None], n: int) -> None:
        try:
            work(n)
        except BaseException as err:
            errors.append(err)

    shares = [count // len(workers) + (i < count % len(workers)) for i in range(len(workers))]
    pool = [
        threading.Thread(target=guarded, args=args) for args in zip(workers, shares, strict=True)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def floor_throughput(stack: Stack, options: Options, workers: int) -> Throughput:
    """``options.jobs`` no-op tasks sent from the client threads, each thread then waiting
    for its own results (one Celery app per thread: a result consumer is not shared).
    The apps connect during a warm-up, outside the timing."""
    apps = [floor.make_app(stack.redis_url(1)) for _ in range(options.threads)]
    submitted: list[float] = []

    def sender(app: Celery) -> Callable[[int], None]:
        def send_and_wait(n: int) -> None:
            results = [app.send_task(floor.TASK, args=[i]) for i in range(n)]
            submitted.append(time.perf_counter())
            for result in results:
                result.get(timeout=120)

        return send_and_wait

    try:
        senders = [sender(app) for app in apps]
        in_threads(options.warmup, senders)
        submitted.clear()
        start = time.perf_counter()
        in_threads(options.jobs, senders)
        seconds = time.perf_counter() - start
    finally:
        for app in apps:
            app.close()
    submit_s = max(submitted) - start
    return Throughput(
        "celery no-op task", options.jobs, workers, seconds, submit_s, options.jobs / seconds
    )


def finished(client: httpx.Client) -> tuple[float, float]:
    """mmserve's counters of succeeded and failed jobs, from ``/metrics`` (all workers)."""
    succeeded = failed = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name != "mmserve_jobs_finished":
            continue
        for sample in family.samples:
            if sample.labels.get("status") == "succeeded":
                succeeded += sample.value
            elif sample.labels.get("status") == "failed":
                failed += sample.value
    return succeeded, failed


def mmserve_throughput(base: str, stack: Stack, options: Options, workers: int) -> Throughput:
    """``options.jobs`` one-row jobs submitted from the client threads, until ``/metrics``
    counts them all succeeded. A warm-up first, outside the timing: the clients connect, and
    each worker process loads the model with its first job."""
    submitted: list[float] = []

    def submitter(client: httpx.Client) -> Callable[[int], None]:
        def submit(n: int) -> None:
            for _ in range(n):
                answer = client.post(f"/v1/models/{MODEL}/async", content=stack.row, headers=CSV)
                if answer.status_code != 202:
                    raise RuntimeError(f"submit answered {answer.status_code}: {answer.text}")
            submitted.append(time.perf_counter())

        return submit

    with contextlib.ExitStack() as opened:
        watcher = opened.enter_context(httpx.Client(base_url=base, timeout=30))
        clients = [httpx.Client(base_url=base, timeout=30) for _ in range(options.threads)]
        submitters = [submitter(opened.enter_context(client)) for client in clients]
        all_done(watcher, submitters, options.warmup)
        submitted.clear()
        start = time.perf_counter()
        all_done(watcher, submitters, options.jobs)
        seconds = time.perf_counter() - start
    submit_s = max(submitted) - start
    return Throughput(
        "mmserve job", options.jobs, workers, seconds, submit_s, options.jobs / seconds
    )


def all_done(watcher: httpx.Client, submitters: list[Callable[[int], None]], count: int) -> None:
    """Submit ``count`` jobs and return once they all succeeded; raise if one failed."""
    done_before, failed_before = finished(watcher)
    in_threads(count, submitters)
    deadline = time.monotonic() + 60 + count
    while True:
        done, failed = finished(watcher)
        if failed > failed_before:
            raise RuntimeError(f"{failed - failed_before:.0f} jobs failed; see the worker log")
        if done - done_before >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done - done_before:.0f} of {count} jobs done in time")
        time.sleep(0.1)  # a scrape costs the API a few ms; 0.1 s is < 1% of the runs


# -- 3. memory -------------------------------------------------------------------------------


def csv_payload(size: int) -> tuple[int, Iterator[bytes]]:
    """A CSV body of whole rows, about ``size`` bytes, made of one ~1 MiB block repeated:
    its exact length, and a generator of it (the client never holds it whole either)."""
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.6f}" for v in rng.normal(size=FEATURES)) + "\n" for _ in range(64)]
    unit = "".join(rows).encode()
    block = unit * max(1, MIB // len(unit))
    blocks, rest = divmod(size, len(block))
    tail = block[: rest - rest % len(unit)]  # whole groups of rows

    def chunks() -> Iterator[bytes]:
        for _ in range(blocks):
            yield block
        if tail:
            yield tail

    return blocks * len(block) + len(tail), chunks()


class RssSampler:
    """VmRSS of one process every 50 ms, in a thread, for as long as the block runs."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append((time.perf_counter() - start, rss_mib(self.pid)))
            self._stop.wait(RSS_EVERY_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(mib for _, mib in self.samples)


def submit_big(base: str, pid: int, stack: Stack, options: Options) -> Memory:
    """POST the big payload while sampling the API's RSS; no worker runs (the job stays
    queued: scoring 1 GiB is not what this measures, and would only load the machine)."""
    with httpx.Client(base_url=base, timeout=600) as client:
        warm = client.post(f"/v1/models/{MODEL}/async", content=stack.row, headers=CSV)
        warm.raise_for_status()  # the submit path's imports and connections, before "before"
        time.sleep(1)
        before = rss_mib(pid)
        size, body = csv_payload(options.payload_bytes)
        headers = {**CSV, "Content-Length": str(size)}
        with RssSampler(pid) as sampler:
            start = time.perf_counter()
            answer = client.post(f"/v1/models/{MODEL}/async", content=body, headers=headers)
            upload_s = time.perf_counter() - start
            time.sleep(0.2)  # a few samples after the 202
    stored = 0
    if answer.status_code == 202:
        location = urlparse(answer.json()["input_location"])  # file:///... on a local store
        stored = Path(unquote(location.path)).stat().st_size
    else:
        console.print(f"[red]big submit answered {answer.status_code}: {answer.text[:200]}[/red]")
    peak = max(sampler.peak, before)
    return Memory(
        payload_bytes=size,
        status=answer.status_code,
        upload_s=upload_s,
        stored_bytes=stored,
        before_mib=before,
        peak_mib=peak,
        growth_mib=peak - before,
        hwm_mib=rss_mib(pid, "VmHWM"),
        after_jobs_mib=stack.api_rss_after_jobs,
        trace=[(round(t, 3), round(m, 1)) for t, m in sampler.samples],
    )


# -- the run ---------------------------------------------------------------------------------


def run(options: Options, folder: Path) -> Results:
    ensure_redis_server()
    store = folder / "store"
    stack = Stack(free_port(), store, register_model(store))
    results = Results()
    with redis(stack.redis_port):
        console.print(f"redis-server on port {stack.redis_port}, store in {store}")
        run_jobs(stack, options, results)
        with api(stack, "api-memory") as (base, process):
            console.print(f"3. memory: POST {_size(options.payload_bytes)} of CSV ...")
            results.memory = submit_big(base, process.pid, stack, options)
            console.print(memory_line(results.memory))
    return results


def run_jobs(stack: Stack, options: Options, results: Results) -> None:
    """Sections 1 and 2: the floor's worker, then mmserve's, never both at once."""
    with floor_worker(stack, 1):
        results.latency.append(floor_round_trips(stack, options))
        console.print(latency_line(results.latency[-1]))
    with floor_worker(stack, 2):
        results.throughput.append(floor_throughput(stack, options, 2))
        console.print(throughput_line(results.throughput[-1]))
    with api(stack, "api") as (base, process):
        with mmserve_worker(stack, 1):
            trip, phases = mmserve_round_trips(base, stack, options, long_poll=True)
            results.latency.append(trip)
            results.phases = phases
            console.print(latency_line(trip))
            polled, results.polled_phases = mmserve_round_trips(base, stack, options, False)
            results.latency.append(polled)
            console.print(latency_line(polled))
        with mmserve_worker(stack, 2):
            results.throughput.append(mmserve_throughput(base, stack, options, 2))
            console.print(throughput_line(results.throughput[-1]))
        stack.api_rss_after_jobs = rss_mib(process.pid)


# -- report ----------------------------------------------------------------------------------


def latency_line(point: Latency) -> str:
    return (
        f"1. {point.side:>18}: {point.n} round trips, "
        f"p50 {point.p50_ms:.2f} ms, p99 {point.p99_ms:.2f} ms"
    )


def throughput_line(point: Throughput) -> str:
    return (
        f"2. {point.side:>18}: {point.jobs:,} in {point.seconds:.2f} s = {point.per_s:,.0f}/s "
        f"(submitted in {point.submit_seconds:.2f} s)"
    )


def memory_line(memory: Memory) -> str:
    return (
        f"3. API RSS {memory.before_mib:.0f} MiB before, {memory.peak_mib:.0f} MiB peak "
        f"(+{memory.growth_mib:.0f}); HTTP {memory.status} after {memory.upload_s:.1f} s"
    )


def round_trip_table(results: Results) -> Table:
    table = Table(
        "side", "round trips", "p50 ms", "p99 ms", "mean ms", "first ms", title="1. round trip"
    )
    for point in results.latency:
        table.add_row(
            point.side,
            str(point.n),
            f"{point.p50_ms:.2f}",
            f"{point.p99_ms:.2f}",
            f"{point.mean_ms:.2f}",
            f"{point.first_ms:,.1f}",
        )
    floor_, *ours = results.latency
    table.add_section()
    for point in ours:
        table.add_row(
            f"{point.side} ÷ floor",
            "",
            f"{point.p50_ms / floor_.p50_ms:.1f}x",
            f"{point.p99_ms / floor_.p99_ms:.1f}x",
            f"{point.mean_ms / floor_.mean_ms:.1f}x",
            "",
        )
    return table


def phases_table(phases: Phases, polled: Phases | None) -> Table:
    table = Table(
        "phase",
        "long poll, median ms",
        f"polling every {POLL_S * 1e3:g} ms",
        title="where one mmserve job's round trip goes",
    )

    def row(name: str, field_name: str) -> None:
        other = f"{getattr(polled, field_name):.2f}" if polled else ""
        table.add_row(name, f"{getattr(phases, field_name):.2f}", other)

    row("POST → 202 (store the input, the record; publish)", "submit_ms")
    row("202 → started_at (message, the worker's read and lease)", "to_start_ms")
    row("started_at → finished_at (load, decode, predict, write)", "run_ms")
    row("finished_at → seen succeeded (the client's GET)", "seen_ms")
    return table


def throughput_table(results: Results) -> Table:
    table = Table(
        "side",
        "jobs",
        "worker processes",
        "seconds",
        "submitted in s",
        "jobs/s",
        title="2. throughput",
    )
    for point in results.throughput:
        table.add_row(
            point.side,
            f"{point.jobs:,}",
            str(point.workers),
            f"{point.seconds:.2f}",
            f"{point.submit_seconds:.2f}",
            f"{point.per_s:,.0f}",
        )
    if len(results.throughput) == 2:
        floor_, ours = results.throughput
        table.add_section()
        table.add_row("mmserve ÷ floor", "", "", "", "", f"{ours.per_s / floor_.per_s:.2f}x")
    return table


def memory_table(memory: Memory) -> Table:
    table = Table(
        "API process", "MiB", title=f"3. memory: one {_size(memory.payload_bytes)} CSV POSTed"
    )
    table.add_row(
        "VmRSS after the first two sections' jobs (first API)", f"{memory.after_jobs_mib:.1f}"
    )
    table.add_row(
        "VmRSS before the upload (fresh API, one small job submitted)", f"{memory.before_mib:.1f}"
    )
    table.add_row(
        f"VmRSS peak during the upload (every {RSS_EVERY_S * 1e3:g} ms)", f"{memory.peak_mib:.1f}"
    )
    table.add_row("peak - before", f"{memory.growth_mib:+.1f}")
    table.add_row(
        "VmHWM at the end (the kernel's peak since start, updated lazily)", f"{memory.hwm_mib:.1f}"
    )
    table.add_section()
    rate = memory.payload_bytes / MIB / memory.upload_s
    table.add_row(f"HTTP {memory.status} after", f"{memory.upload_s:.1f} s ({rate:,.0f} MiB/s)")
    table.add_row("stored input", f"{memory.stored_bytes:,} bytes")
    return table


def _size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 * 0.9 else f"{n / MIB:,.0f} MiB"


def targets(results: Results) -> list[Target]:
    found = job_targets(results)
    memory = results.memory
    if memory is None:
        return found
    size = _size(memory.payload_bytes)
    name = f"API RSS while a {size} payload is submitted < {RSS_TARGET_MIB:g} MiB"
    measured = (
        f"peak {memory.peak_mib:.0f} MiB (before {memory.before_mib:.0f}, +{memory.growth_mib:.0f})"
    )
    met = memory.status == 202 and memory.peak_mib < RSS_TARGET_MIB
    return [*found, Target(name, measured, met)]


def job_targets(results: Results) -> list[Target]:
    """The issue's ratios: a long-polled job's p50 round trip to a no-op task's, and the
    jobs/s of 2 worker processes to theirs (measured in the same run)."""
    found = []
    if len(results.latency) >= 2:
        floor_, ours = results.latency[:2]
        ratio = ours.p50_ms / floor_.p50_ms
        found.append(
            Target(
                f"one-row job round trip p50 ≤ {ROUND_TRIP_TARGET:g}x a no-op Celery task's",
                f"{ratio:.1f}x ({ours.p50_ms:.2f} vs {floor_.p50_ms:.2f} ms)",
                ratio <= ROUND_TRIP_TARGET,
            )
        )
    if len(results.throughput) == 2:
        floor_t, ours_t = results.throughput
        share = ours_t.per_s / floor_t.per_s
        found.append(
            Target(
                f"{ours_t.jobs:,} jobs, {ours_t.workers} worker processes ≥ "
                f"{THROUGHPUT_TARGET:g}x the no-op's jobs/s",
                f"{share:.2f}x ({ours_t.per_s:,.0f} vs {floor_t.per_s:,.0f} jobs/s)",
                share >= THROUGHPUT_TARGET,
            )
        )
    return found


def targets_table(found: list[Target]) -> Table:
    table = Table("target", "measured", "result", title="the issue's targets for mmserve")
    for target in found:
        verdict = "PASS" if target.met else "[bold red]MISS[/bold red]"
        table.add_row(target.name, target.measured, verdict)
    return table


def machine() -> dict[str, Any]:
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "httpx": httpx.__version__,
        "scikit-learn": sklearn.__version__,
        "redis-server": redis_version.stdout.split()[2].removeprefix("v="),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def write_json(options: Options, results: Results, found: list[Target], load: float) -> None:
    document = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {**machine(), "load_average_1m_at_start": round(load, 2)},
        "options": asdict(options),
        "round_trip": [asdict(p) for p in results.latency],
        "phases": asdict(results.phases) if results.phases else None,
        "polled_phases": asdict(results.polled_phases) if results.polled_phases else None,
        "throughput": [asdict(p) for p in results.throughput],
        "memory": asdict(results.memory) if results.memory else None,
        "targets": [asdict(t) for t in found],
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


# -- main ------------------------------------------------------------------------------------


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="50 round trips, 200 jobs, a 200 MiB payload"
    )
    args = parser.parse_args()
    if args.quick:
        return Options(round_trips=50, warmup=10, jobs=200, threads=8, payload_bytes=200 * MIB)
    return Options(round_trips=200, warmup=20, jobs=2_000, threads=8, payload_bytes=1024 * MIB)


def main() -> None:
    # Ctrl-C and SIGTERM unwind through ``started``, which stops every process it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_options()
    LOGS.mkdir(parents=True, exist_ok=True)
    console.print(f"{platform.node()} · {os.cpu_count()} cores")
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(f"[yellow]load average {load:.2f}: something else is using the CPUs[/yellow]")
    with tempfile.TemporaryDirectory(prefix="async-") as tmp:
        results = run(options, Path(tmp))
    console.print(round_trip_table(results))
    if results.phases is not None:
        console.print(phases_table(results.phases, results.polled_phases))
    console.print(throughput_table(results))
    if results.memory is not None:
        console.print(memory_table(results.memory))
    found = targets(results)
    console.print(targets_table(found))
    write_json(options, results, found, load)
    console.print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        console.print("interrupted; every process it started is stopped")
        sys.exit(130)
