"""A batch run over a file that crashed a native parser: the run fails naming the line
(read a block at a time, as ever), and the process ends on its own terms."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.serving.http.test_crashing_bodies import null_at_second_block


@pytest.mark.slow
def test_a_null_line_at_a_blocks_start_fails_the_run_naming_it(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    Registry(store).register(fixtures.logistic(), "lr")
    body, line = null_at_second_block()
    (tmp_path / "in.jsonl").write_bytes(body)
    argv = [os.path.join(os.path.dirname(sys.executable), "mmserve"), "batch", "run"]
    argv += ["--model", "lr", "--input", str(tmp_path / "in.jsonl")]
    run = subprocess.run(
        [*argv, "--output", str(tmp_path / "out")],
        env={**os.environ, "MMSERVE_STORE_URL": store.url},
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr.decode()
    assert f"line {line} is not a JSON object (one object per line)" in run.stderr.decode()
    assert not (tmp_path / "out" / "_manifest.json").exists()
