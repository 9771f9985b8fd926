"""Asynchronous jobs, nothing lost: workers killed mid-run, a Redis restarted with jobs
queued, a job that kills its worker, a 200 MB payload. Each test starts the workers it
needs, so no other worker takes its jobs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import kill_group, mmserve_worker
from tests.workers.stack import ROW, Stack, output_writes, rss_mb, submit, succeeded, wait

pytestmark = pytest.mark.slow


def test_a_killed_worker_loses_no_job_and_writes_no_output_twice(stack: Stack) -> None:
    tokens = [submit(stack, "slow", f"{i / 100},1,2,3,4") for i in range(200)]
    with mmserve_worker(stack.env, str(stack.logs / "first.log"), "--concurrency", "2") as proc:
        deadline = time.monotonic() + 60
        while succeeded(stack, tokens[:60]) < 30 and time.monotonic() < deadline:
            time.sleep(0.2)
        kill_group(proc, signal.SIGKILL)  # the worker and its pool: jobs die mid-run
        proc.wait(10)
    with mmserve_worker(stack.env, str(stack.logs / "second.log"), "--concurrency", "2", "--beat"):
        records = wait(stack, tokens, seconds=180)
    assert [r["status"] for r in records.values()].count("succeeded") == 200
    for i, token in enumerate(tokens):
        answer = json.loads(stack.store.read(f"jobs/{token}/output"))["predictions"][0]
        assert answer["proba_1"] == pytest.approx(1 / (1 + pow(2.718281828459045, -i / 100)))
    writes = output_writes(stack)
    assert [writes.get(token) for token in tokens] == [1] * len(tokens)


def test_jobs_queued_in_a_redis_that_restarts_are_run_after_the_sweep(stack: Stack) -> None:
    tokens = [submit(stack, "lr") for _ in range(20)]  # no worker: they wait in Redis
    stack.broker.stop()  # the messages are gone
    started = time.monotonic()
    refused = stack.client.post(
        "/v1/models/lr/async", content=ROW, headers={"content-type": "text/csv"}
    )
    assert refused.status_code == 503
    assert time.monotonic() - started < 20  # no request hangs on a dead Redis
    assert refused.headers["retry-after"] == "5"
    stored = re.search(r"job ([0-9a-f]{32}) is stored", refused.json()["error"])
    assert stored is not None, refused.json()
    record = stack.client.get(f"/v1/jobs/{stored[1]}").json()
    assert record["status"] == "queued"
    assert record["queue_error"]
    tokens.append(stored[1])
    stack.broker.start()
    tokens.append(submit(stack, "lr"))  # the API publishes again once Redis is back
    with mmserve_worker(stack.env, str(stack.logs / "after-restart.log"), "--beat"):
        records = wait(stack, tokens, seconds=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_a_job_that_kills_its_worker_fails_after_max_deliveries(stack: Stack) -> None:
    with mmserve_worker(stack.env, str(stack.logs / "crash.log"), "--concurrency", "1", "--beat"):
        doomed = submit(stack, "crash")
        fine = submit(stack, "lr")
        records = wait(stack, [doomed, fine], seconds=120)
    assert records[fine]["status"] == "succeeded"
    assert records[doomed]["status"] == "failed"
    assert records[doomed]["error"]["type"] == "WorkerLost"
    assert records[doomed]["lost"] == 3
    assert "died 3 times" in records[doomed]["error"]["message"]


def test_a_200_mb_payload_passes_with_bounded_api_memory(stack: Stack) -> None:
    line = b"0.123456789,-1.23456789,2.3456789,0.5,-0.5\n"
    count = 200 * 1024 * 1024 // len(line)

    def body() -> Iterator[bytes]:
        block = line * 8192
        for _ in range(count // 8192):
            yield block
        yield line * (count % 8192)

    before = rss_mb(stack.server_pid)
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak.append(rss_mb(stack.server_pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        response = stack.client.post(
            "/v1/models/lr/async",
            content=body(),
            headers={"content-type": "text/csv", "accept": "text/csv"},
            timeout=300,
        )
    finally:
        done.set()
        watcher.join()
    assert response.status_code == 202, response.text
    grew = max(peak) - before
    # Half the body: whatever a busy machine's allocator keeps, a body held whole would show
    # (the store's upload holds about one 16 MiB part, and its copy, at a time).
    assert grew < 100, f"the API grew by {grew:.0f} MB while it took a 200 MB body"
    token = response.json()["job_id"]
    with mmserve_worker(stack.env, str(stack.logs / "big.log"), "--concurrency", "1"):
        assert wait(stack, [token], seconds=240)[token]["status"] == "succeeded"
    with stack.client.stream("GET", f"/v1/jobs/{token}/result") as result:
        lines = sum(chunk.count(b"\n") for chunk in result.iter_bytes())
    assert lines == count


def test_a_worker_rides_a_redis_restart_with_a_job_in_flight(stack: Stack) -> None:
    """It reconnects and goes on: under a plain process manager, a worker that exits (even
    with 0) after a Redis restart is a worker gone."""
    with mmserve_worker(stack.env, str(stack.logs / "ride.log"), "--concurrency", "2") as proc:
        in_flight = submit(stack, "sleepy")
        deadline = time.monotonic() + 60
        while stack.client.get(f"/v1/jobs/{in_flight}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        stack.broker.shutdown()
        time.sleep(2)  # down for a moment: the worker notices while Redis is away
        stack.broker.start()
        # The job in flight ends (its message cannot be acknowledged: Redis lost it), then
        # the worker takes a new one.
        assert wait(stack, [in_flight], seconds=60)[in_flight]["status"] == "succeeded"
        after = submit(stack, "lr")
        deadline = time.monotonic() + 120
        while proc.poll() is None and succeeded(stack, [after]) == 0:
            assert time.monotonic() < deadline, "the worker never ran the job after the restart"
            time.sleep(0.2)
        assert proc.poll() is None, f"the worker exited with {proc.returncode}"


def test_a_worker_that_gives_up_exits_non_zero(tmp_path: Path) -> None:
    """A worker that stops on an error it cannot recover from says so with its exit code,
    so a process manager restarts it (here: a broker URL whose database is not a number)."""
    env = {"MMSERVE_STORE_URL": str(tmp_path), "MMSERVE_BROKER_URL": "redis://127.0.0.1:1/x"}
    mmserve = os.path.join(os.path.dirname(sys.executable), "mmserve")
    done = subprocess.run(
        [mmserve, "worker", "--concurrency", "1"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
    )
    assert b"Unrecoverable error" in done.stdout + done.stderr
    assert done.returncode == 1
