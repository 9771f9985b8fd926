"""What every runtime shares: a model whose library is not installed is refused at
registration, naming the extra that installs it; the threads a call may use come from the
settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.ensemble import RandomForestClassifier

from serving.registry import Registry
from serving.settings import RegistrySettings
from serving.store import Store

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


def _forest_graph(x: np.ndarray, y: np.ndarray) -> Any:
    from skl2onnx import to_onnx

    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(x, y)
    return to_onnx(forest, x[:1], options={"zipmap": False})


def _threads(runtime: str, native: Any) -> int | None:
    """The threads the library was told to use; ``None`` where it is told at each call."""
    if runtime == "onnx":
        return int(native.get_session_options().intra_op_num_threads)
    if runtime == "xgboost":
        config = json.loads(native.get_booster().save_config())
        return int(config["learner"]["generic_param"]["nthread"])
    return None  # LightGBM: Booster.predict(num_threads=...)


@pytest.mark.parametrize("runtime", ["xgboost", "lightgbm", "onnx"])
@pytest.mark.parametrize("threads", [1, 2])
def test_calls_use_the_threads_the_settings_give(
    tmp_path: Path, runtime: str, threads: int
) -> None:
    """``model_threads`` reaches the library; XGBoost's and LightGBM's answers do not depend
    on it (rows are split among threads). An ONNX tree ensemble's may: on two threads it sums
    its trees in another order (the setting's documentation says so)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = {
        "xgboost": lambda: pytest.importorskip("xgboost").XGBClassifier(n_estimators=20).fit(x, y),
        "lightgbm": lambda: (
            pytest.importorskip("lightgbm").LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y)
        ),
        "onnx": lambda: _forest_graph(x, y),
    }[runtime]()
    registry = Registry(Store.from_url(str(tmp_path)), RegistrySettings(model_threads=threads))
    registry.register(model, "m")
    predictor = registry.load("m")
    assert _threads(runtime, predictor.model) in (threads, None)
    table = pa.table({f"f{i}": x[:, i].astype(np.float64) for i in range(4)})
    answer = predictor.predict(table)
    one = Registry(registry.store).load("m").predict(table)  # the default: one thread
    assert answer.equals(one) or (runtime == "onnx" and threads > 1)
