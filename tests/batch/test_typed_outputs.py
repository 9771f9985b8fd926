"""A batch run of a model whose answers are typed: parquet parts keep a string label, an int
code and an embedding (a list column), CSV parts have the embedding as ``embedding_0..3`` and
a list of any length as its JSON text, JSON lines parts have arrays; ``mmserve batch run``
writes the same, and a run published online from CSV parts answers the embedding as a list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from batch import online
from batch.runner import run_batch
from batch.spec import BatchSpec
from serving.registry import Registry
from serving.settings import Settings
from tests import fixtures
from tests.services import redis_server

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
XS = [1.5, -2.0, 0.25, 3.0]
ROWS = [{"id": i, **answer} for i, answer in enumerate(fixtures.typed_answers(XS))]
CSV_PART = (
    '"id","label","code","score","embedding_0","embedding_1","embedding_2","embedding_3",'
    '"tokens"\n'
    '0,"spam",2,0.75,1.5,3,-1.5,0.375,"[0]"\n'
    '1,"ham",0,-1,-2,-4,2,-0.5,"[0,1]"\n'
    '2,"spam",2,0.125,0.25,0.5,-0.25,0.0625,"[]"\n'
    '3,"spam",2,1.5,3,6,-3,0.75,"[]"\n'
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=str(tmp_path / "store"))


@pytest.fixture
def registry(settings: Settings, tmp_path: Path) -> Registry:
    registry = Registry.from_settings(settings)
    registry.register(fixtures.typed_model(tmp_path / "typed"), "typed", trust_code=True)
    return registry


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": range(len(XS)), "x": XS}), folder / "rows.parquet")
    return folder


def run(registry: Registry, settings: Settings, source: Path, out: Path, **more: Any) -> Path:
    spec = BatchSpec(model="typed", input=str(source), output=str(out), id_column="id", **more)
    manifest = run_batch(spec, registry, settings)
    assert (manifest["rows"], manifest["rejected"], manifest["model"]) == (len(XS), 0, "typed:1")
    return out


def test_parquet_parts_keep_the_types_and_the_embedding_as_a_list(
    registry: Registry, settings: Settings, source: Path, tmp_path: Path
) -> None:
    out = run(registry, settings, source, tmp_path / "out")
    part = pq.read_table(out / "part-00000.parquet")
    assert [(f.name, str(f.type)) for f in part.schema] == [
        ("id", "int64"),
        ("label", "string"),
        ("code", "int64"),
        ("score", "double"),
        ("embedding", "fixed_size_list<element: float>[4]"),
        ("tokens", "list<element: int64>"),
    ]
    assert part.to_pylist() == ROWS


def test_csv_parts_have_the_embedding_as_columns(
    registry: Registry, settings: Settings, source: Path, tmp_path: Path
) -> None:
    out = run(registry, settings, source, tmp_path / "out", format="csv")
    assert (out / "part-00000.csv").read_text() == CSV_PART


def test_json_lines_parts_have_arrays(
    registry: Registry, settings: Settings, source: Path, tmp_path: Path
) -> None:
    out = run(registry, settings, source, tmp_path / "out", format="jsonl")
    lines = (out / "part-00000.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert lines[1] == (
        '{"id": 1, "label": "ham", "code": 0, "score": -1.0, '
        '"embedding": [-2.0, -4.0, 2.0, -0.5], "tokens": [0, 1]}'
    )


def test_the_cli_writes_the_same_csv_from_a_csv_input(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    source.write_text("id,x\n" + "".join(f"{i},{x}\n" for i, x in enumerate(XS)))
    argv = [MMSERVE, "batch", "run", "--model", "typed", "--input", str(source)]
    argv += ["--output", str(tmp_path / "out"), "--id-column", "id", "--format", "csv"]
    env = {**os.environ, "MMSERVE_STORE_URL": settings.store_url}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "part-00000.csv").read_text() == CSV_PART


def test_a_run_published_from_csv_parts_answers_the_embedding_as_a_list(
    registry: Registry, source: Path, tmp_path: Path
) -> None:
    with redis_server() as index:
        settings = Settings(store_url=str(tmp_path / "store"), redis_url=index.url)
        run(registry, settings, source, tmp_path / "out", format="csv", publish_online=True)
        with redis.Redis.from_url(index.url, decode_responses=True) as client:
            published = client.eval(online.LOOKUP, 1, online.pointer("typed"), "1")
    _, outputs = published
    assert json.loads(outputs) == {
        "label": "ham",
        "code": 0,
        "score": -1.0,
        "embedding": [-2.0, -4.0, 2.0, -0.5],
        "tokens": "[0,1]",  # CSV holds a list of any length as its JSON text
    }
