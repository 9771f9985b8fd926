"""The ``mmserve`` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio

from serving import codecs
from tests import fixtures

MMSERVE = str(Path(sys.executable).with_name("mmserve"))


def run(store: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMSERVE_STORE_URL": str(store), "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run([MMSERVE, *args], env=env, capture_output=True, text=True, timeout=120)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    sio.dump(fixtures.logistic(), tmp_path / "churn.skops")
    joblib.dump(fixtures.forest(), tmp_path / "legacy.joblib")
    x, _ = fixtures.numeric_data(3, seed=11)
    table = fixtures.numeric_table(x).append_column(
        "customer_id", codecs.pa.array(["c1", "c2", "c3"])
    )
    codecs.write_file(table, tmp_path / "rows.csv")
    return tmp_path


@pytest.mark.slow
def test_register_list_show_alias_predict(workdir: Path) -> None:
    store = workdir / "store"
    assert (
        "registered churn:1 (sklearn-skops, classifier"
        in run(
            store,
            "models",
            "register",
            str(workdir / "churn.skops"),
            "--name",
            "churn",
            "--alias",
            "production",
        ).stdout
    )
    run(store, "models", "register", str(workdir / "churn.skops"), "--name", "churn")
    run(
        store,
        "models",
        "register",
        str(workdir / "legacy.joblib"),
        "--name",
        "legacy",
        "--trust-pickle",
    )

    listing = run(store, "models", "list").stdout
    churn_row = next(line for line in listing.splitlines() if " churn " in line)
    assert "production→1" in churn_row and " 2 " in churn_row and "sklearn-skops" in churn_row
    assert "sklearn-pickle" in next(line for line in listing.splitlines() if " legacy " in line)

    shown = json.loads(run(store, "models", "show", "churn@production").stdout)
    assert (shown["version"], shown["outputs"]) == (1, ["label", "proba_0", "proba_1"])
    assert len(shown["sha256"]) == 64

    assert (
        "churn@staging → churn:2" in run(store, "models", "alias", "churn", "staging", "2").stdout
    )
    assert json.loads(run(store, "models", "show", "churn@staging").stdout)["version"] == 2

    scored = json.loads(
        run(
            store,
            "predict",
            "churn",
            "--input",
            str(workdir / "rows.csv"),
            "--id-column",
            "customer_id",
        ).stdout
    )
    x = codecs.read_file(workdir / "rows.csv").select(fixtures.FEATURES).to_pandas().to_numpy()
    expected = fixtures.logistic().predict_proba(x)[:, 1]
    assert scored["model"] == "churn:1"
    assert [r["customer_id"] for r in scored["rows"]] == ["c1", "c2", "c3"]
    np.testing.assert_array_equal([r["proba_1"] for r in scored["rows"]], expected)

    run(
        store,
        "predict",
        "churn:2",
        "-i",
        str(workdir / "rows.csv"),
        "-o",
        str(workdir / "out.parquet"),
    )
    assert codecs.read_file(workdir / "out.parquet").num_rows == 3


@pytest.mark.slow
def test_errors_are_one_line_without_traceback(workdir: Path) -> None:
    store = workdir / "store"
    result = run(
        store, "models", "register", str(workdir / "legacy.joblib"), "--name", "legacy", ok=False
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        f"error: refusing to load {workdir / 'legacy.joblib'}: pickle"
    )
    assert "Traceback" not in result.stderr
    result = run(store, "predict", "ghost@production", "-i", str(workdir / "rows.csv"), ok=False)
    assert result.stderr.strip() == "error: model 'ghost' is not registered"
    result = run(
        store, "models", "register", str(workdir / "churn.skops"), "--name", "../x", ok=False
    )
    assert result.stderr.strip().startswith("error: invalid model name '../x'")


@pytest.mark.slow
def test_approval_guards_production(workdir: Path) -> None:
    store = workdir / "store"
    os.environ["MMSERVE_REGISTRY__DEFAULT_APPROVAL"] = "pending"
    try:
        run(store, "models", "register", str(workdir / "churn.skops"), "--name", "churn")
        refused = run(store, "models", "alias", "churn", "production", "1", ok=False)
        assert "churn:1 is pending, not approved" in refused.stderr
        assert run(store, "models", "approve", "churn:1").stdout.strip() == "churn:1 approved"
        run(store, "models", "alias", "churn", "production", "1")
        assert "move the alias first" in run(store, "models", "reject", "churn:1", ok=False).stderr
    finally:
        del os.environ["MMSERVE_REGISTRY__DEFAULT_APPROVAL"]


def test_mmserve_is_installed() -> None:
    assert shutil.which(MMSERVE)
