"""Batch runs that cannot finish end, and say why: a malformed row or a part that kills its
worker in a distributed run. A killed ``mmserve batch run --workers 2`` leaves no process
behind, and its next start removes the files it left."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import dataset
from tests.services import mmserve_worker, redis_server

MMSERVE = os.path.join(os.path.dirname(sys.executable), "mmserve")


def distributed(tmp_path: Path, store: Store, model: str, source: Path) -> tuple[int, str]:
    """``mmserve batch run --distributed`` of ``source`` on one real worker: its exit code
    and what it printed."""
    with redis_server() as broker:
        env = {
            "MMSERVE_STORE_URL": store.url,
            "MMSERVE_BROKER_URL": broker.url,
            "MMSERVE_JOBS__LEASE_S": "2",
            "MMSERVE_JOBS__MAX_DELIVERIES": "2",
            "MMSERVE_BATCH__ROOTS": json.dumps([str(tmp_path)]),
            "PYTHONPATH": os.getcwd(),  # the worker unpickles the test's models
        }
        argv = [MMSERVE, "batch", "run", "--model", model, "--input", str(source)]
        argv += ["--output", str(tmp_path / "out"), "--distributed", "--partition-rows", "50"]
        with mmserve_worker(env, str(tmp_path / "worker.log"), "--concurrency", "1"):
            run = subprocess.run(
                argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
            )
    return run.returncode, run.stdout + run.stderr


@pytest.mark.slow
def test_a_distributed_run_with_a_malformed_row_fails_naming_it(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    source = tmp_path / "in.csv"
    source.write_text("id,f0,f1,f2,f3\n0,1,2,3,4\n1,the secret\n2,5,6,7,8\n")
    code, said = distributed(tmp_path, store, "lr", source)
    assert code == 1, said
    assert f"part-00000 failed: UnreadableInput: input file {source} is not valid csv" in said
    assert "secret" not in said


@pytest.mark.slow
def test_a_distributed_part_that_kills_its_worker_fails_the_run(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    x, y = fixtures.numeric_data(10)
    crashing = fixtures.CrashingModel(0).fit(x, y)
    Registry(store).register(crashing, "crash", flavor="sklearn-pickle", trust_pickle=True)
    pq.write_table(dataset(10), tmp_path / "in.parquet")
    code, said = distributed(tmp_path, store, "crash", tmp_path / "in.parquet")
    assert code == 1, said
    # Whichever bound comes first: the coordinator's sends, or the deaths the part counts.
    lost = (
        "part-00000 was sent 2 times and never written: the workers that took it died (out "
        "of memory, or a crash in the model), or its messages were lost "
        "(MMSERVE_JOBS__MAX_DELIVERIES)"
    )
    died = (
        "part-00000 failed: WorkerLost: part-00000: its worker died 2 times while writing it "
        "(out of memory, or a crash in the model); not tried again"
    )
    assert " ".join(said.split()).endswith((f"error: {lost}", f"error: {died}")), said


def group(pgid: int) -> list[str]:
    """The live processes of a process group (from /proc: psutil may not be installed)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            continue  # ended meanwhile
        state, _, group_id = stat.rsplit(")", 1)[1].split()[:3]
        if int(group_id) == pgid and state != "Z":
            found.append(cmdline.replace("\0", " ")[:120])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_leaves_no_process_and_its_next_start_no_file(
    tmp_path: Path, sig: signal.Signals, request: pytest.FixtureRequest
) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    x, y = fixtures.numeric_data(10)
    slow = fixtures.SlowModel(0.1).fit(x, y)
    Registry(store).register(slow, "slow", flavor="sklearn-pickle", trust_pickle=True)
    pq.write_table(dataset(2_000), tmp_path / "in.parquet", row_group_size=50)
    # The run's own temporary folder, short enough for the fork server's socket path.
    scratch = Path(tempfile.mkdtemp(prefix="mm-"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    env = {**os.environ, "MMSERVE_STORE_URL": store.url, "PYTHONPATH": os.getcwd(),
           "TMPDIR": str(scratch)}  # fmt: skip
    out = tmp_path / "out"
    argv = [MMSERVE, "batch", "run", "--model", "slow", "--input", str(tmp_path / "in.parquet")]
    argv += ["--output", str(out), "--partition-rows", "50", "--batch-rows", "25"]
    argv += ["--workers", "2"]
    with open(tmp_path / "run.log", "wb") as log:
        run = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        writers = set()
        while len(writers) < 2:  # this process and its helper have both written a part
            said = (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline and run.poll() is None, said
            records = (out / "_parts").glob("*.json") if (out / "_parts").exists() else []
            writers = {json.loads(r.read_text())["writer"] for r in records}
            time.sleep(0.05)
        assert len(group(run.pid)) == 4, group(run.pid)  # run, tracker, fork server, helper
        run.send_signal(sig)
        run.wait(10)
        deadline = time.monotonic() + 30
        while left := group(run.pid):
            assert time.monotonic() < deadline, left
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    assert os.listdir(scratch / "mmserve-batch") == [str(run.pid)]  # its scratch
    assert [p.name for p in out.glob(".tmp-*")] != []  # parts it was writing
    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert [p.name for p in out.rglob(".tmp-*")] == []
    assert os.listdir(scratch / "mmserve-batch") == []
    assert json.loads((out / "_manifest.json").read_text())["rows"] == 2_000
