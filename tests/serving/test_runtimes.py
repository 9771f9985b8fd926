"""What every runtime shares: a model whose library is not installed is refused at
registration, naming the extra that installs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
sys.modules[sys.argv[2]] = None  # as if it were not installed
from pathlib import Path
from serving.errors import MissingRuntime
from serving.registry import Registry
from serving.store import Store
folder = Path(sys.argv[3])
(folder / "model.bin").write_bytes(b"x")
try:
    Registry(Store.from_url(str(folder / "store"))).register(
        folder / "model.bin", "m", flavor=sys.argv[1]
    )
except MissingRuntime as err:
    print(err.status.value, err.message)
"""


@pytest.mark.parametrize(
    ("flavor", "package", "extra"),
    [
        ("xgboost", "xgboost", "xgboost"),
        ("lightgbm", "lightgbm", "lightgbm"),
        ("onnx", "onnxruntime", "onnx"),
    ],
)
def test_a_missing_library_is_named_with_its_extra(
    tmp_path: Path, flavor: str, package: str, extra: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, flavor, package, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path.cwd(),
    )
    assert done.stdout.strip() == (
        f"501 {flavor} models need the '{package}' package, which is not installed: "
        f"pip install 'mmserve[{extra}]'"
    ), done.stderr
