"""Asynchronous jobs, the worker's memory: the peak RSS of `mmserve worker` scoring big CSV jobs.

    .venv/bin/python benchmarks/async_memory.py [--sizes 150,1024]

One throwaway redis-server, a local-folder store in a temporary directory, a real
``mmserve serve`` and one ``mmserve worker --concurrency 1`` (prefork: its one pool process
runs the jobs). A one-row job first, then one job per size (MiB of headerless CSV, written
into the store and named by ``input_location``), one at a time. During each job a thread
reads ``VmRSS`` of the worker and its pool process every 50 ms; after it, their ``VmHWM``.
The baseline is the same processes' ``VmRSS`` after the one-row job. See
benchmarks/README.md, "Asynchronous: the worker's memory".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
bench = importlib.import_module("async")  # benchmarks/async.py: its processes and payloads

RESULTS = bench.WORK / "async_memory.json"
MIB = bench.MIB
console = Console(width=110)


@dataclass(frozen=True)
class Baseline:
    """The worker's processes after a one-row job: imports done, the model loaded."""

    worker_mib: float  # VmRSS of the worker (the consumer: it runs no job)
    pool_mib: float  # VmRSS of its pool process (which runs the jobs)
    pool_pid: int


@dataclass(frozen=True)
class Point:
    """One big job."""

    input_bytes: int
    rows: int
    status: str
    job_s: float  # started_at -> finished_at
    output_bytes: int
    pool_peak_mib: float  # the pool process's VmRSS, sampled every 50 ms during the job
    pool_hwm_mib: float  # its VmHWM after the job (its peak since it started)
    worker_hwm_mib: float  # the consumer's VmHWM after the job
    pool_pid: int  # the same as the baseline's: the job ran in the measured process


def pool_pid(worker: int) -> int:
    """The worker's one pool process (a child of the consumer)."""
    children = Path(f"/proc/{worker}/task/{worker}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"worker {worker} has children {children}, expected one pool process")
    return int(children[0])


def write_input(store: Path, size: int) -> tuple[str, int]:
    """A headerless CSV of about ``size`` bytes in the store: its key and its rows."""
    key = f"inputs/rows-{size // MIB}mib.csv"
    path = store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    _, chunks = bench.csv_payload(size)
    with path.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            rows += chunk.count(b"\n")
    return key, rows


def run_job(client: httpx.Client, key: str) -> dict[str, Any]:
    """Submit the job that names ``key``; its record once it finished."""
    body = {"input_location": key, "content_type": "text/csv"}
    answer = client.post(f"/v1/models/{bench.MODEL}/async", json=body)
    if answer.status_code != 202:
        raise RuntimeError(f"submit answered {answer.status_code}: {answer.text[:200]}")
    status_url = answer.json()["status_url"]
    while (record := client.get(status_url).json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        time.sleep(0.5)
    return dict(record)


def measure(client: httpx.Client, stack: Any, worker: int, size: int) -> Point:
    key, rows = write_input(stack.store, size)
    pool = pool_pid(worker)
    with bench.RssSampler(pool) as sampler:
        record = run_job(client, key)
    if record["status"] != "succeeded":
        console.print(f"[red]job {record['job_id']} {record['status']}: {record['error']}[/red]")
    started, finished = (
        datetime.fromisoformat(record[name].replace("Z", "+00:00")).timestamp()
        for name in ("started_at", "finished_at")
    )
    output = stack.store / "jobs" / record["job_id"] / "output"
    point = Point(
        input_bytes=(stack.store / key).stat().st_size,
        rows=rows,
        status=record["status"],
        job_s=finished - started,
        output_bytes=output.stat().st_size if output.exists() else 0,
        pool_peak_mib=sampler.peak,
        pool_hwm_mib=bench.rss_mib(pool, "VmHWM"),
        worker_hwm_mib=bench.rss_mib(worker, "VmHWM"),
        pool_pid=pool_pid(worker),
    )
    (stack.store / key).unlink()  # the disk of the next, bigger one
    return point


def run(sizes: list[int], folder: Path) -> tuple[Baseline, list[Point]]:
    bench.ensure_redis_server()
    store = folder / "store"
    stack = bench.Stack(bench.free_port(), store, bench.register_model(store))
    points = []
    with (
        bench.redis(stack.redis_port),
        bench.api(stack, "api-memory") as (base, _),
        bench.mmserve_worker(stack, 1) as worker,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        warm = client.post(
            f"/v1/models/{bench.MODEL}/async", content=stack.row, headers=bench.CSV
        ).json()
        while client.get(warm["status_url"]).json()["status"] != "succeeded":
            time.sleep(0.1)
        time.sleep(1)
        pool = pool_pid(worker.pid)
        baseline = Baseline(bench.rss_mib(worker.pid), bench.rss_mib(pool), pool)
        console.print(
            f"idle: worker {baseline.worker_mib:.0f} MiB, pool process {baseline.pool_mib:.0f} MiB"
        )
        for size in sizes:
            console.print(f"a {size:,} MiB CSV job ...")
            points.append(measure(client, stack, worker.pid, size * MIB))
            console.print(line(baseline, points[-1]))
    return baseline, points


def line(baseline: Baseline, point: Point) -> str:
    return (
        f"{point.input_bytes / MIB:,.0f} MiB ({point.rows:,} rows): {point.status} in "
        f"{point.job_s:.1f} s; pool process peak {point.pool_peak_mib:.0f} MiB "
        f"(+{point.pool_peak_mib - baseline.pool_mib:.0f} over idle), VmHWM "
        f"{point.pool_hwm_mib:.0f} MiB"
    )


def table(baseline: Baseline, points: list[Point]) -> Table:
    out = Table(
        "job input",
        "rows",
        "job s",
        "output",
        "pool peak MiB",
        "over idle",
        "pool VmHWM",
        "worker VmHWM",
        title=f"the worker's memory (idle: worker {baseline.worker_mib:.0f} MiB, "
        f"pool process {baseline.pool_mib:.0f} MiB)",
    )
    for p in points:
        out.add_row(
            f"{p.input_bytes / MIB:,.0f} MiB",
            f"{p.rows:,}",
            f"{p.job_s:.1f}",
            f"{p.output_bytes / MIB:,.0f} MiB",
            f"{p.pool_peak_mib:.0f}",
            f"+{p.pool_peak_mib - baseline.pool_mib:.0f}",
            f"{p.pool_hwm_mib:.0f}",
            f"{p.worker_hwm_mib:.0f}",
        )
    return out


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="150,1024", help="MiB of CSV, one job each, in order")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    bench.LOGS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    console.print(f"{platform.node()} · {os.cpu_count()} cores · load {load:.2f}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="async-memory-") as tmp:
        baseline, points = run(sizes, Path(tmp))
    console.print(table(baseline, points))
    moved = any(p.pool_pid != baseline.pool_pid for p in points)
    if moved:
        console.print("[red]the pool process changed during the run: figures are not its own[/red]")
    document = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {**bench.machine(), "load_average_1m_at_start": round(load, 2)},
        "baseline": asdict(baseline),
        "jobs": [asdict(p) for p in points],
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"written to {RESULTS.relative_to(bench.ROOT)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
