"""The batch runner on a local folder and on the S3 server: formats, exact answers, resume
after a kill -9, bad rows, several processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batch.parts import BadRow
from batch.runner import MANIFEST, RunConflict, run_batch, status
from batch.spec import BatchSpec
from serving.errors import TamperedArtifact
from serving.registry import Registry
from serving.settings import AwsSettings, Settings
from serving.store import Store
from tests import fixtures
from tests.services import kill_group, mmserve_worker, redis_server

ROWS = 1_000


def dataset(rows: int = ROWS, seed: int = 3) -> pa.Table:
    x, _ = fixtures.numeric_data(rows, seed)
    return pa.table({"id": np.arange(rows), **fixtures.numeric_table(x).to_pydict()})


def write_inputs(store: Store, table: pa.Table) -> None:
    """The same rows as parquet (row groups of 100), CSV and JSON lines, under ``in/``."""
    with store.open_output("in/a.parquet") as out:
        pq.write_table(table.slice(0, 500), out, row_group_size=100)
    with store.open_output("in/b.csv") as out:
        pacsv.write_csv(table.slice(500, 300), out)
    lines = "".join(json.dumps(row) + "\n" for row in table.slice(800).to_pylist())
    store.write("in/c.jsonl", lines.encode())


@pytest.fixture
def settings(store: Store, aws: AwsSettings) -> Settings:
    return Settings(store_url=store.url, aws=aws)


def read_parts(out: Store) -> pa.Table:
    names = sorted(n for n in out.list("") if n.startswith("part-"))
    return pa.concat_tables(pq.read_table(pa.BufferReader(out.read(n))) for n in names)


def test_every_row_is_scored_exactly_once_in_input_order(
    registry: Registry, store: Store, settings: Settings
) -> None:
    registry.register(fixtures.logistic(), "lr")
    table = dataset()
    write_inputs(store, table)
    spec = BatchSpec(
        model="lr",
        input=f"{store.url}/in",
        output=f"{store.url}/out",
        id_column="id",
        partition_rows=200,
        batch_rows=64,
    )
    manifest = run_batch(spec, registry, settings)
    assert [p["name"] for p in manifest["parts"]] == [f"part-0000{i}" for i in range(5)]
    assert [p["rows"] for p in manifest["parts"]] == [200, 200, 100, 300, 200]
    assert (manifest["rows"], manifest["rejected"], manifest["model"]) == (ROWS, 0, "lr:1")
    scored = read_parts(Store.from_url(spec.output, settings.aws))
    expected = registry.load("lr").predict(table, passthrough=["id"])
    assert scored.column("id").to_pylist() == list(range(ROWS))
    for name in ("label", "proba_0", "proba_1"):
        assert scored.column(name).to_pylist() == expected.column(name).to_pylist()
    out = Store.from_url(spec.output, settings.aws)
    for part in manifest["parts"]:
        data = out.read(f"{part['name']}.parquet")
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
    assert status(registry, settings, manifest["run_id"])["parts_done"] == 5
    out.delete(MANIFEST)  # as if still running: the status reads each part's record
    assert status(registry, settings, manifest["run_id"])["rows"] == ROWS
    out.write("_parts/part-00000.json", b"not read again")  # a record is written once
    assert status(registry, settings, manifest["run_id"])["rows"] == ROWS


def test_a_run_is_resumed_not_restarted(
    registry: Registry, store: Store, settings: Settings, tmp_path: Path
) -> None:
    registry.register(fixtures.logistic(), "lr")
    write_inputs(store, dataset())
    spec = BatchSpec(model="lr", input=f"{store.url}/in", output=str(tmp_path / "out"))
    first = run_batch(spec, registry, settings)
    with pytest.raises(RunConflict, match="resume it"):
        run_batch(spec, registry, settings)
    registry.register(fixtures.forest(), "lr")  # the alias moves on; the run keeps lr:1
    again = run_batch(spec, registry, settings, resume=True)
    assert again["parts"] == first["parts"] and again["model"] == "lr:1"
    other = spec.model_copy(update={"id_column": "id"})
    with pytest.raises(RunConflict, match="another spec"):
        run_batch(other, registry, settings, run_id=first["run_id"])


def test_bad_rows_stop_the_run_or_are_set_aside(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    registry.register(fixtures.logistic(), "lr")
    table = dataset(300)
    f1 = table.column("f1").to_pylist()
    f1[7] = f1[250] = None  # the model's inputs take no nulls
    table = table.set_column(2, "f1", pa.array(f1, pa.float64()))
    pq.write_table(table, tmp_path / "in.parquet")
    spec = BatchSpec(
        model="lr", input=str(tmp_path / "in.parquet"), output=str(tmp_path / "fail"),
        id_column="id", batch_rows=100,
    )  # fmt: skip
    with pytest.raises(BadRow, match=r"in.parquet row 7: .*f1"):
        run_batch(spec, registry, settings)
    skip = spec.model_copy(update={"output": str(tmp_path / "skip"), "on_error": "skip"})
    manifest = run_batch(skip, registry, settings)
    assert (manifest["rows"], manifest["rejected"]) == (298, 2)
    out = Store.from_url(skip.output)
    assert read_parts(out).column("id").to_pylist() == [i for i in range(300) if i not in (7, 250)]
    rejects = pq.read_table(tmp_path / "skip" / "_rejects" / "part-00000.parquet")
    assert rejects.column("row").to_pylist() == [7, 250]
    assert rejects.column("id").to_pylist() == [7, 250]
    assert all("f1" in reason for reason in rejects.column("reason").to_pylist())


@pytest.mark.slow
def test_two_processes_write_what_one_writes(tmp_path: Path) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    x, y = fixtures.numeric_data(10)
    slow = fixtures.SlowModel(0.4).fit(x, y)  # 16 parts: ~6 s alone, a helper starts in ~2
    registry.register(slow, "slow", flavor="sklearn-pickle", trust_pickle=True)
    pq.write_table(dataset(1_600), tmp_path / "in.parquet", row_group_size=100)
    settings = Settings(store_url=registry.store.url)
    one = BatchSpec(model="slow", input=str(tmp_path / "in.parquet"), output=str(tmp_path / "one"),
                    id_column="id", partition_rows=100)  # fmt: skip
    two = one.model_copy(update={"output": str(tmp_path / "two")})
    first = run_batch(one, registry, settings)
    # Nothing in the environment says where the store is: the helper gets the settings.
    second = run_batch(two, registry, settings, workers=2)
    assert [p["sha256"] for p in second["parts"]] == [p["sha256"] for p in first["parts"]]
    assert second["rows"] == 1_600
    writers = [p["writer"] for p in second["parts"]]
    here = f"{socket.gethostname()}:{os.getpid()}"
    # This process takes parts from the back, the helper from the front, until they meet.
    assert writers[-1] == here and writers[0] != here
    assert writers == sorted(writers, key=lambda w: w == here)


def test_a_model_that_fails_to_load_here_fails_a_two_process_run_and_the_next_one_runs(
    tmp_path: Path,
) -> None:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    mv = registry.register(fixtures.logistic(), "lr")  # loaded here once the helper starts
    pq.write_table(dataset(400), tmp_path / "in.parquet", row_group_size=100)
    settings = Settings(store_url=registry.store.url)
    spec = BatchSpec(model="lr", input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"),
                     id_column="id", partition_rows=100)  # fmt: skip
    key = "registry/lr/1/model.skops"
    artifact = registry.store.read(key)
    registry.store.write(key, artifact + b"\0")
    with pytest.raises(TamperedArtifact) as info:
        run_batch(spec, registry, settings, workers=2)
    assert info.value.message.startswith(f"artifact '{key}' fails its integrity check")
    assert info.value.message.endswith(f"registered as {mv.sha256}")
    registry.store.write(key, artifact)
    manifest = run_batch(spec, registry, settings, workers=2, resume=True)
    assert manifest["rows"] == 400 and len(manifest["parts"]) == 4


@pytest.mark.slow
def test_a_run_killed_at_any_moment_resumes_to_the_same_output(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    x, y = fixtures.numeric_data(10)
    Registry(store).register(
        fixtures.SlowModel(0.05).fit(x, y), "slow", flavor="sklearn-pickle", trust_pickle=True
    )
    pq.write_table(dataset(2_000), tmp_path / "in.parquet", row_group_size=50)
    env = {**os.environ, "MMSERVE_STORE_URL": store.url, "PYTHONPATH": os.getcwd()}

    def run(output: str, *more: str) -> subprocess.Popen[bytes]:
        argv = [os.path.join(os.path.dirname(sys.executable), "mmserve"), "batch", "run"]
        argv += ["--model", "slow", "--input", str(tmp_path / "in.parquet")]
        argv += ["--output", str(tmp_path / output), "--id-column", "id"]
        argv += ["--partition-rows", "50", "--batch-rows", "25", *more]
        with open(tmp_path / f"{output}.log", "ab") as log:
            return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    assert run("whole").wait(120) == 0, (tmp_path / "whole.log").read_text()
    killed = run("killed")
    parts = tmp_path / "killed" / "_parts"
    deadline = time.monotonic() + 60
    while len(list(parts.glob("*.json")) if parts.exists() else []) < 10:
        assert time.monotonic() < deadline and killed.poll() is None
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    assert not (tmp_path / "killed" / "_manifest.json").exists()
    resumed = run("killed", "--resume")
    assert resumed.wait(120) == 0, (tmp_path / "killed.log").read_text()
    whole = json.loads((tmp_path / "whole" / "_manifest.json").read_text())
    again = json.loads((tmp_path / "killed" / "_manifest.json").read_text())
    assert [p["sha256"] for p in again["parts"]] == [p["sha256"] for p in whole["parts"]]
    for part in whole["parts"]:
        name = f"{part['name']}.parquet"
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


@pytest.mark.slow
def test_a_distributed_run_survives_a_killed_worker(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    x, y = fixtures.numeric_data(10)
    Registry(store).register(
        fixtures.SlowModel(0.05).fit(x, y), "slow", flavor="sklearn-pickle", trust_pickle=True
    )
    pq.write_table(dataset(1_600), tmp_path / "in.parquet", row_group_size=50)
    with redis_server() as broker:
        env = {
            "MMSERVE_STORE_URL": store.url,
            "MMSERVE_BROKER_URL": broker.url,
            "MMSERVE_JOBS__LEASE_S": "2",
            "MMSERVE_BATCH__ROOTS": json.dumps([str(tmp_path)]),  # the workers confine parts
            "PYTHONPATH": os.getcwd(),
        }
        argv = [os.path.join(os.path.dirname(sys.executable), "mmserve"), "batch", "run"]
        argv += ["--model", "slow", "--input", str(tmp_path / "in.parquet"), "--id-column", "id"]
        argv += ["--partition-rows", "50", "--batch-rows", "25"]
        local = subprocess.run(
            [*argv, "--output", str(tmp_path / "local")], env={**os.environ, **env}, timeout=120
        )
        assert local.returncode == 0
        logs = tmp_path / "logs"
        logs.mkdir()
        with (
            mmserve_worker(env, str(logs / "a.log"), "--concurrency", "1") as doomed,
            mmserve_worker(env, str(logs / "b.log"), "--concurrency", "1"),
            open(logs / "run.log", "wb") as log,
        ):
            run = subprocess.Popen(
                [*argv, "--output", str(tmp_path / "spread"), "--distributed"],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            parts = tmp_path / "spread" / "_parts"
            deadline = time.monotonic() + 60
            while len(list(parts.glob("*.json")) if parts.exists() else []) < 8:
                assert time.monotonic() < deadline and run.poll() is None
                time.sleep(0.05)
            kill_group(doomed, signal.SIGKILL)
            assert run.wait(120) == 0, (logs / "run.log").read_text()
    whole = json.loads((tmp_path / "local" / "_manifest.json").read_text())
    spread = json.loads((tmp_path / "spread" / "_manifest.json").read_text())
    assert len(whole["parts"]) == 32
    assert [p["sha256"] for p in spread["parts"]] == [p["sha256"] for p in whole["parts"]]
    assert spread["rows"] == 1_600
