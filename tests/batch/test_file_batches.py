"""Batch runs over files that are no tables (issue 19): each file of a folder, a glob or an
``s3://`` prefix is one row, ``path`` then its bytes, scored as the in-process predictor
scores them, on this process and on the workers; ``--files-out`` writes each answer as
``<path>.out``; a file of another media type or past the size limit is a bad row named by its
path; model calls are bounded; a killed run resumes without redoing its finished parts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import files
from batch.files import BadFile, FilesRefused
from batch.parts import plan
from batch.runner import run_batch
from batch.spec import BatchSpec
from serving.errors import InvalidName
from serving.registry import Registry
from serving.settings import AwsSettings, BatchSettings, Settings
from serving.store import Store
from tests import fixtures
from tests.batch.test_runner import read_parts
from tests.services import mmserve_worker, redis_server
from tests.serving.http.test_raw_bodies import MANIFESTS, register_file_models

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
MORE = """\
import time

import pyarrow as pa


class Slow:
    def load(self, path):
        pass

    def predict(self, table):
        time.sleep(0.15)
        return pa.table({"size": pa.array([len(f) for f in table["scan"].to_pylist()], pa.int64())})


class Count:
    def load(self, path):
        pass

    def predict(self, table):
        files = table["scan"].to_pylist()
        total = sum(len(f) for f in files)
        return pa.table({"rows": [len(files)] * len(files), "bytes": [total] * len(files)})
"""
MORE_MANIFESTS = {
    "slow": """\
        model = "more:Slow"
        [inputs]
        scan = { type = "binary", content_type = "image/*" }
        [outputs]
        size = "int64"
    """,
    "count": """\
        model = "more:Count"
        row_block = 1
        [inputs]
        scan = { type = "binary", content_type = "image/png" }
        [outputs]
        rows = "int64"
        bytes = "int64"
    """,
}
PNG = b"\x89PNG\r\n\x1a\n"
NAMES = [f"a/{i:02d}.png" for i in range(20)] + [f"b/{i:02d}.png" for i in range(20, 40)]


def scan(i: int) -> bytes:
    return PNG + bytes([i]) * (i + 1) + bytes(range(i % 7))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(Store.from_url(str(tmp_path / "store")))
    register_file_models(registry, tmp_path / "models", *MANIFESTS)
    for name, manifest in MORE_MANIFESTS.items():
        folder = fixtures.code_folder(tmp_path / "models", name, manifest, **{"more.py": MORE})
        registry.register(folder, name, trust_code=True)
    registry.register(fixtures.logistic(), "lr")
    return registry


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """40 PNG-like files under ``scans/a`` and ``scans/b``."""
    for i, name in enumerate(NAMES):
        (tmp_path / "scans" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "scans" / name).write_bytes(scan(i))
    return tmp_path / "scans"


def expected(registry: Registry, names: list[str], model: str = "digest") -> pa.Table:
    """What the in-process predictor answers for the files ``names`` (by their index)."""
    table = pa.table({"path": names, "scan": [scan(NAMES.index(n)) for n in names]})
    return registry.load(model).predict(table, passthrough=["path"])


def test_a_folder_of_files_is_a_row_each_as_the_predictor_scores_them(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    settings = Settings(store_url=registry.store.url)
    spec = BatchSpec(model="digest", input=str(scans), output=str(tmp_path / "out"),
                     partition_rows=10, batch_rows=4)  # fmt: skip
    manifest = run_batch(spec, registry, settings)
    assert (manifest["rows"], manifest["rejected"], len(manifest["parts"])) == (40, 0, 4)
    scored = read_parts(Store.from_url(spec.output))
    assert scored.column_names == ["path", "size", "sha256"]
    assert scored.equals(expected(registry, NAMES))
    record = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert record["plan"]["files"][0] == [str(scans / "a" / "00.png"), "file", "a/00.png"]
    assert record["plan"]["partitions"][1] == [10, None, 10]
    # A glob: the files it matches, named relative to its folder; JSON lines parts.
    (scans / "a" / "notes.txt").write_text("not a scan")
    glob = spec.model_copy(
        update={"input": str(scans / "a" / "*.png"), "output": str(tmp_path / "glob"),
                "format": "jsonl"}
    )  # fmt: skip
    assert run_batch(glob, registry, settings)["rows"] == 20
    lines = (tmp_path / "glob" / "part-00000.jsonl").read_text().splitlines()
    first = expected(registry, ["a/00.png"]).to_pylist()[0]
    assert json.loads(lines[0]) == {**first, "path": "00.png"}


def test_an_s3_prefix_of_files_is_scored_into_s3(
    registry: Registry, s3_url: str, aws: AwsSettings
) -> None:
    bucket = Store.from_url(s3_url, aws)
    for i, name in enumerate(NAMES):
        bucket.write(f"scans/{name}", scan(i))
    settings = Settings(store_url=registry.store.url, aws=aws)
    spec = BatchSpec(model="digest", input=f"{s3_url}/scans/", output=f"{s3_url}/out",
                     format="csv", partition_rows=25)  # fmt: skip
    manifest = run_batch(spec, registry, settings)
    assert (manifest["rows"], len(manifest["parts"])) == (40, 2)
    out = Store.from_url(spec.output, aws)
    text = out.read("part-00000.csv").decode() + out.read("part-00001.csv").decode()
    want = expected(registry, NAMES).to_pylist()
    rows = [line for line in text.splitlines() if not line.startswith('"path"')]
    assert rows == [f'"{r["path"]}",{r["size"]},"{r["sha256"]}"' for r in want]


def test_files_out_writes_each_answer_as_its_path_dot_out(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    argv = [MMSERVE, "batch", "run", "--model", "mirror", "--input", str(scans)]
    argv += ["--output", str(tmp_path / "out"), "--files-out", "--partition-rows", "16"]
    env = {**os.environ, "MMSERVE_STORE_URL": registry.store.url}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    outs = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.out"))
    assert outs == [f"{name}.out" for name in NAMES]
    for i, name in enumerate(NAMES):
        assert (tmp_path / "out" / f"{name}.out").read_bytes() == scan(i)[::-1]
    index = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert index.to_pylist()[:2] == [
        {"path": "a/00.png", "output": "a/00.png.out"},
        {"path": "a/01.png", "output": "a/01.png.out"},
    ]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert (manifest["rows"], len(manifest["parts"])) == (40, 3)


def test_a_file_of_another_type_or_too_big_is_a_bad_row_named_by_its_path(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    (scans / "b" / "huge.png").write_bytes(PNG + bytes(5000))
    (scans / "b" / "notes.txt").write_text("a note")
    settings = Settings(store_url=registry.store.url, batch=BatchSettings(max_file_bytes=1000))
    spec = BatchSpec(model="digest", input=str(scans), output=str(tmp_path / "fail"))
    with pytest.raises(BadFile) as raised:
        run_batch(spec, registry, settings)
    too_big = "it is 5008 bytes, past 1000 (MMSERVE_BATCH__MAX_FILE_BYTES)"
    assert raised.value.message == f"input file b/huge.png: {too_big}"
    skip = spec.model_copy(update={"output": str(tmp_path / "skip"), "on_error": "skip"})
    manifest = run_batch(skip, registry, settings)
    assert (manifest["rows"], manifest["rejected"]) == (40, 2)
    assert read_parts(Store.from_url(skip.output)).equals(expected(registry, NAMES))
    rejects = pq.read_table(tmp_path / "skip" / "_rejects" / "part-00000.parquet")
    assert rejects.select(["path", "reason"]).to_pylist() == [
        {"path": "b/huge.png", "reason": too_big},
        {"path": "b/notes.txt", "reason": "its media type text/plain is not image/*"},
    ]


def test_model_calls_take_a_bounded_number_of_files_and_bytes(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    settings = Settings(store_url=registry.store.url, batch=BatchSettings(max_file_bytes=120))
    spec = BatchSpec(model="count", input=str(scans), output=str(tmp_path / "out"), batch_rows=5)
    run_batch(spec, registry, settings)
    calls: list[list[int]] = [[]]  # the files of each call: at most 5, at most 120 bytes
    for i in range(len(NAMES)):
        if len(calls[-1]) == 5 or sum(len(scan(j)) for j in calls[-1]) + len(scan(i)) > 120:
            calls.append([])
        calls[-1].append(i)
    assert [len(c) for c in calls][:3] == [5, 5, 4] and [len(c) for c in calls][-1] == 2
    answers = [{"rows": len(c), "bytes": sum(len(scan(i)) for i in c)} for c in calls for _ in c]
    assert read_parts(Store.from_url(spec.output)).drop(["path"]).to_pylist() == answers


def test_inputs_and_models_that_cannot_make_a_run_over_files_are_refused(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    settings = Settings(store_url=registry.store.url)
    pq.write_table(pa.table({"x": [1.0]}), scans / "b" / "rows.parquet")
    mixed = BatchSpec(model="digest", input=str(scans / "b"), output=str(tmp_path / "o1"))
    with pytest.raises(InvalidName, match=r"mixes tables \(.*rows.parquet\) and files that"):
        run_batch(mixed, registry, settings)
    lr = BatchSpec(model="lr", input=str(scans / "a"), output=str(tmp_path / "o2"))
    with pytest.raises(FilesRefused, match=r"00.png is no table, and lr:1 takes f0 "):
        run_batch(lr, registry, settings)
    out = lr.model_copy(update={"model": "digest", "files_out": True})
    with pytest.raises(FilesRefused, match="one output is binary; digest:1 answers size, sha256"):
        run_batch(out, registry, settings)
    assert not (tmp_path / "o2" / "_run.json").exists()  # refused before the run starts


def test_a_killed_run_resumes_without_redoing_its_finished_parts(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    argv = [MMSERVE, "batch", "run", "--model", "slow", "--input", str(scans)]
    argv += ["--output", str(tmp_path / "out"), "--partition-rows", "4"]
    env = {**os.environ, "MMSERVE_STORE_URL": registry.store.url}
    with open(tmp_path / "run.log", "ab") as log:
        killed = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    parts = tmp_path / "out" / "_parts"
    deadline = time.monotonic() + 30
    while len(list(parts.glob("*.json")) if parts.exists() else []) < 3:
        assert time.monotonic() < deadline and killed.poll() is None
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    before = {p.name: p.read_text() for p in parts.glob("*.json")}
    assert 3 <= len(before) < 10 and not (tmp_path / "out" / "_manifest.json").exists()
    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"10 parts ({len(before)} already done)" in resumed.stderr
    assert {name: (parts / name).read_text() for name in before} == before  # not rewritten
    assert read_parts(Store.from_url(str(tmp_path / "out"))).equals(
        expected(registry, NAMES, "slow")
    )


def test_a_distributed_run_writes_what_a_local_run_writes(
    registry: Registry, scans: Path, tmp_path: Path
) -> None:
    settings = Settings(store_url=registry.store.url)
    local = BatchSpec(model="mirror", input=str(scans), output=str(tmp_path / "local"),
                      partition_rows=10, files_out=True)  # fmt: skip
    whole = run_batch(local, registry, settings)
    argv = [MMSERVE, "batch", "run", "--input", str(scans), "--distributed"]
    argv += ["--partition-rows", "10"]
    with redis_server() as broker:
        env = {
            **os.environ,
            "MMSERVE_STORE_URL": registry.store.url,
            "MMSERVE_BROKER_URL": broker.url,
            "MMSERVE_BATCH__ROOTS": json.dumps([str(tmp_path)]),  # the workers confine parts
        }
        with mmserve_worker(env, str(tmp_path / "worker.log"), "--concurrency", "2"):
            runs = [
                subprocess.run([*argv, *more], env=env, capture_output=True, text=True, timeout=60)
                for more in (
                    ["--model", "digest", "--output", str(tmp_path / "rows")],
                    ["--model", "mirror", "--output", str(tmp_path / "spread"), "--files-out"],
                )
            ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert read_parts(Store.from_url(str(tmp_path / "rows"))).equals(expected(registry, NAMES))
    manifest = json.loads((tmp_path / "spread" / "_manifest.json").read_text())
    assert [p["sha256"] for p in manifest["parts"]] == [p["sha256"] for p in whole["parts"]]
    for name in NAMES:
        out = f"{name}.out"
        assert (tmp_path / "spread" / out).read_bytes() == (tmp_path / "local" / out).read_bytes()


def test_a_folder_is_planned_in_parts_of_at_most_part_files(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(files.PART_FILES + 5):
        (folder / f"{i:05d}.png").write_bytes(b"x")
    spec = BatchSpec(model="digest", input=str(folder), output=str(tmp_path / "out"))
    sizes = [len(p.files) for p in plan(spec, Settings())]
    assert sizes == [files.PART_FILES, 5]
