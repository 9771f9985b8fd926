"""A cell its column's type cannot hold, in a batch run's CSV or JSON-lines input: with
``--on-error skip`` the row goes to ``_rejects/`` with its reason and every other row is
scored as it would be without it; with ``fail`` the run stops naming file, row, column and
value. Run by the real ``mmserve batch run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from serving.registry import Registry
from serving.store import Store

MMSERVE = os.path.join(os.path.dirname(sys.executable), "mmserve")
ROWS = 20_000  # past the readers' first block (1 MiB of CSV, of JSON lines)


def rows(count: int = ROWS) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table(
        {
            "id": np.arange(count),
            "visits": rng.integers(0, 50, count),
            "spend": rng.normal(100, 30, count),
            "note": ["fine with a long enough remark to fill the blocks"] * count,
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.from_url(str(tmp_path / "store"))
    frame = rows(400).select(["visits", "spend"]).to_pandas()
    model = LogisticRegression().fit(frame, (frame["spend"] > 100).to_numpy())
    Registry(store).register(model, "visits", input_example=pd.DataFrame(frame.head(5)))
    return store


def run(store: Store, source: Path, output: Path, *more: str) -> subprocess.CompletedProcess[str]:
    argv = [MMSERVE, "batch", "run", "--model", "visits", "--input", str(source)]
    argv += ["--output", str(output), "--id-column", "id", "--format", "parquet", *more]
    env = {**os.environ, "MMSERVE_STORE_URL": store.url}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def csv_with(cells: dict[int, str], path: Path) -> Path:
    """``rows()`` as CSV, the ``visits`` cell of each row in ``cells`` replaced."""
    pacsv.write_csv(rows(), path)
    lines = path.read_text().splitlines()
    for row, cell in cells.items():
        values = lines[row + 1].split(",")
        values[1] = cell
        lines[row + 1] = ",".join(values)
    path.write_text("\n".join(lines) + "\n")
    return path


def scored(output: Path) -> pa.Table:
    return pq.read_table(output / "part-00000.parquet")


BAD = {3: "abc", 15_000: "3.5", 19_999: '"12x"'}  # in the first block, a later one, the last row


def test_a_bad_csv_cell_is_set_aside_under_skip(store: Store, tmp_path: Path) -> None:
    source = csv_with(BAD, tmp_path / "in.csv")
    done = run(store, source, tmp_path / "skip", "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    answers = scored(tmp_path / "skip")
    kept = [i for i in range(ROWS) if i not in BAD]
    assert answers.column("id").to_pylist() == kept
    rejects = pq.read_table(tmp_path / "skip" / "_rejects" / "part-00000.parquet")
    assert rejects.to_pylist() == [
        {"row": 3, "id": 3, "reason": "column 'visits' must be int64, got 'abc'"},
        {"row": 15_000, "id": 15_000, "reason": "column 'visits' must be int64, got '3.5'"},
        {"row": 19_999, "id": 19_999, "reason": "column 'visits' must be int64, got '12x'"},
    ]
    # Every other row is scored as it is in a file without the bad ones.
    clean = tmp_path / "clean.csv"
    pacsv.write_csv(rows().take(kept), clean)
    assert run(store, clean, tmp_path / "clean").returncode == 0
    assert answers.equals(scored(tmp_path / "clean"))


def test_a_bad_csv_cell_fails_the_run_naming_file_row_column_and_value(
    store: Store, tmp_path: Path
) -> None:
    source = csv_with({15_000: "3.5"}, tmp_path / "in.csv")
    done = run(store, source, tmp_path / "fail")
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"{source} row 15000: column 'visits' must be int64, got '3.5'" in said
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "fail" / "_manifest.json").exists()


def test_a_json_line_whose_type_changes_is_set_aside_under_skip(
    store: Store, tmp_path: Path
) -> None:
    records = rows().to_pylist()
    changed = {2: "seven", 12_000: True, 19_000: "12"}  # first block, later blocks
    for row, value in changed.items():
        records[row]["spend"] = value
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = run(store, source, tmp_path / "skip", "--on-error", "skip")
    assert done.returncode == 0, done.stderr
    kept = [i for i in range(ROWS) if i not in changed]
    assert scored(tmp_path / "skip").column("id").to_pylist() == kept
    rejects = pq.read_table(tmp_path / "skip" / "_rejects" / "part-00000.parquet")
    assert rejects.to_pylist() == [
        {"row": 2, "id": 2, "reason": "column 'spend' must be double, got \"seven\""},
        {"row": 12_000, "id": 12_000, "reason": "column 'spend' must be double, got true"},
        {"row": 19_000, "id": 19_000, "reason": "column 'spend' must be double, got \"12\""},
    ]
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(records[i]) + "\n" for i in kept))
    assert run(store, clean, tmp_path / "clean").returncode == 0
    assert scored(tmp_path / "skip").equals(scored(tmp_path / "clean"))

    done = run(store, source, tmp_path / "fail")
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"{source} row 2: column 'spend' must be double, got \"seven\"" in said
