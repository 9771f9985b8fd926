"""Where a batch run started over HTTP, a queue or a schedule may read and write (the store
and the allowed roots), how its input is listed (once, bounded, no link out of a root), and
what a failed run says about a file it could not read (never its bytes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batch.distributed import run_part
from batch.places import Roots
from batch.runner import run_batch, start, status
from batch.spec import BatchSpec, input_files
from serving.errors import InvalidName
from serving.registry import Registry
from serving.settings import BatchSettings, Settings
from tests import fixtures
from tests.batch.test_runner import dataset
from workers.batch import run_recorded

RULE = "must be under the store or a root in MMSERVE_BATCH__ROOTS"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "data").mkdir()
    roots = [str(tmp_path / "data"), "s3://bucket/in"]
    return Settings(store_url=str(tmp_path / "store"), batch=BatchSettings(roots=roots))


@pytest.fixture
def registry(settings: Settings) -> Registry:
    registry = Registry.from_settings(settings)
    registry.register(fixtures.logistic(), "lr")
    return registry


def refused(roots: Roots, location: str, field: str = "input") -> str:
    with pytest.raises(InvalidName) as raised:
        roots.confine(location, field)
    assert raised.value.status == 400
    return raised.value.message


def test_a_confined_run_names_store_keys_or_places_under_a_root(
    settings: Settings, tmp_path: Path
) -> None:
    roots = Roots.of(settings)
    store, data = tmp_path / "store", tmp_path / "data"
    assert roots.confine("in/*.parquet", "input") == f"{store}/in/*.parquet"
    assert roots.confine("scores/2026", "output") == f"{store}/scores/2026"
    assert roots.confine(str(data / "a.csv"), "input") == str(data / "a.csv")
    assert roots.confine(f"file://{data}/b/", "output") == str(data / "b")
    assert roots.confine(f"{store}/x", "output") == f"{store}/x"
    assert roots.confine("s3://bucket/in/day=1/", "input") == "s3://bucket/in/day=1/"
    assert refused(roots, "/etc/passwd") == f"invalid batch input '/etc/passwd': {RULE}"
    assert (
        refused(roots, str(tmp_path), "output") == f"invalid batch output {str(tmp_path)!r}: {RULE}"
    )
    assert refused(roots, f"{data}/../store2/x") == (
        f"invalid batch input '{data}/../store2/x': '..' is not allowed"
    )
    assert "'..' is not allowed" in refused(roots, "in/../../etc")
    assert (
        refused(roots, "s3://bucket/inside") == f"invalid batch input 's3://bucket/inside': {RULE}"
    )
    assert refused(roots, "s3://other/in/x") == f"invalid batch input 's3://other/in/x': {RULE}"
    for other in ("http://host/x.csv", "hdfs://x/y", "file://host/etc/passwd"):
        assert refused(roots, other) == (
            f"invalid batch input {other!r}: use a store key, a path or s3://"
        )
    assert "store key" in refused(roots, "out/*", "output")
    (data / "out").symlink_to("/etc")
    assert refused(roots, str(data / "out" / "passwd")) == (
        f"invalid batch input '{data}/out/passwd': {RULE}"
    )


def test_a_folder_with_a_link_out_of_the_roots_is_refused(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    pq.write_table(dataset(10), tmp_path / "data" / "a.parquet")
    pq.write_table(dataset(10), tmp_path / "secret.parquet")
    (tmp_path / "data" / "b.parquet").symlink_to(tmp_path / "secret.parquet")
    folder = str(tmp_path / "data")
    spec = BatchSpec(model="lr", input=folder, output=str(tmp_path / "out"))
    with pytest.raises(InvalidName) as raised:
        run_batch(spec, registry, settings, roots=Roots.of(settings))
    assert raised.value.message == (
        f"invalid batch input {folder!r}: {folder}/b.parquet links out of the allowed roots"
    )
    # The machine's own user (the CLI) is not confined: the link is followed.
    _, files = input_files(folder)
    assert [Path(f.path).name for f in files] == ["a.parquet", "b.parquet"]


def test_a_link_loop_is_listed_once_and_a_listing_is_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "deep").mkdir(parents=True)
    pq.write_table(dataset(10), folder / "deep" / "a.parquet")
    (folder / "deep" / "loop").symlink_to(folder)  # a folder link is never entered
    (folder / "up").symlink_to(tmp_path)
    _, files = input_files(str(folder))
    assert [f.path for f in files] == [str(folder / "deep" / "a.parquet")]
    for i in range(3):
        pq.write_table(dataset(10), folder / f"{i}.parquet")
    with pytest.raises(InvalidName) as raised:
        input_files(str(folder), limit=5)
    assert raised.value.message == (
        f"invalid batch input {str(folder)!r}: lists more than 5 files and folders "
        "(MMSERVE_BATCH__MAX_INPUT_FILES)"
    )
    assert len(input_files(str(folder), limit=7)[1]) == 4


def test_the_input_is_listed_once_when_the_run_starts(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "data" / "in.parquet"
    pq.write_table(dataset(300), source, row_group_size=100)
    spec = BatchSpec(
        model="lr", input=str(source), output=str(tmp_path / "out"), partition_rows=100
    )
    manifest = run_batch(spec, registry, settings)
    record = json.loads((tmp_path / "out" / "_run.json").read_text())
    assert record["plan"] == {
        "files": [[str(source), "parquet"]],
        "partitions": [[0, [0]], [0, [1]], [0, [2]]],
    }
    source.unlink()  # a status reads the plan: it never lists the input again
    state = status(registry, settings, manifest["run_id"])
    assert (state["status"], state["parts_done"], state["parts"]) == ("succeeded", 3, 3)
    resumed = run_batch(spec, registry, settings, resume=True)  # the plan, not a new listing
    assert resumed["parts"] == manifest["parts"]


def test_a_file_that_cannot_be_read_is_named_never_quoted_a_bad_cell_by_its_value(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "data" / "in.csv"
    bad.write_text("f0,f1,f2,f3\n1,2,3,4\nroot:x:0:0:the secret\n5,6,7,8\n")
    spec = BatchSpec(model="lr", input=str(bad), output=str(tmp_path / "data" / "out"))
    run_recorded(settings, registry, spec, "r1", distributed=False)
    error = json.loads((tmp_path / "data" / "out" / "_error.json").read_text())
    assert error == {
        "type": "UnreadableInput",
        "message": f"input file {bad} is not valid csv at row 0 or after",
    }
    bad.write_text("f0,f1,f2,f3,f4\n1,2,3,4,5\n5,6,nope-secret,8,9\n")
    again = spec.model_copy(update={"output": str(tmp_path / "data" / "again")})
    run_recorded(settings, registry, again, "r2", distributed=False)
    error = json.loads((tmp_path / "data" / "again" / "_error.json").read_text())
    # A cell its column cannot hold is named by its value (its first 40 characters).
    assert error["message"] == f"{bad} row 1: column 'f2' must be double, got 'nope-secret'"


def test_a_run_or_part_from_the_queue_outside_the_roots_writes_nothing(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    pq.write_table(dataset(10), tmp_path / "outside.parquet")
    outside = str(tmp_path / "outside.parquet")
    forged = BatchSpec(model="lr", input=outside, output=str(tmp_path / "stolen"))
    run_recorded(settings, registry, forged, "r3", distributed=False)
    inside = forged.model_copy(update={"output": str(tmp_path / "data" / "stolen")})
    run_recorded(settings, registry, inside, "r4", distributed=False)
    assert not (tmp_path / "stolen").exists()
    assert not (tmp_path / "data" / "stolen").exists()
    # A part message naming a file outside the roots, with an input and output inside.
    pq.write_table(dataset(10), tmp_path / "data" / "in.parquet")
    spec = inside.model_copy(update={"input": str(tmp_path / "data")})
    partition = {"index": 0, "file": {"path": outside, "format": "parquet"}, "row_groups": None}
    run_part(None, settings, registry.load, spec.model_dump_json(), "r5", "lr:1", partition)  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "stolen").exists()
    assert os.listdir(tmp_path / "data") == ["in.parquet"]


def test_a_run_its_worker_refuses_is_failed_saying_why(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    """The API started it under its roots; a worker without them refuses it. Its output is
    no place that worker may write: the status reads the refusal from the store."""
    pq.write_table(dataset(10), tmp_path / "data" / "in.parquet")
    spec = BatchSpec(model="lr", input=str(tmp_path / "data"), output=str(tmp_path / "data" / "o"))
    run = start(spec, registry, settings, None, False, Roots.of(settings))
    assert status(registry, settings, run.run_id)["status"] == "running"
    rootless = settings.model_copy(update={"batch": BatchSettings()})
    run_recorded(rootless, registry, spec, run.run_id, distributed=False)
    state = status(registry, settings, run.run_id)
    assert state["status"] == "failed"
    assert state["error"] == {
        "type": "InvalidName",
        "message": f"the worker refused it: invalid batch input '{tmp_path / 'data'}': {RULE}",
    }
    assert os.listdir(tmp_path / "data" / "o") == ["_run.json"]
