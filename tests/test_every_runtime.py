"""One model of each runtime, trained here, answers the same 500 rows identically in every
mode — real time (V1, V2 through tritonclient, SageMaker's ``/invocations``), an async job
on a real worker, a batch run (local helpers, and distributed on the worker) and a stream —
and as its own library does in-process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton

from models._stream import Consumer, streamers
from serving.registry import Registry
from serving.settings import Settings
from tests.services import mmserve_process, mmserve_worker, redis_server

MMSERVE = os.path.join(os.path.dirname(sys.executable), "mmserve")
FEATURES = ["income", "debt", "age", "tenure", "balance", "utilization"]
ROWS = 500
Answer = dict[str, np.ndarray]


@dataclass(frozen=True)
class Trained:
    """A model of one runtime: what to register, and its library's own answer to rows."""

    runtime: str
    model: Any
    own: Callable[[pd.DataFrame], Answer]
    options: dict[str, Any]


def data(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    y = (x["income"] - x["debt"] + 0.5 * x["age"] * x["tenure"] > 0).astype(int).to_numpy()
    return x, y


def probabilities_of(p: np.ndarray, labels: np.ndarray) -> Answer:
    return {"label": labels, "proba_0": p[:, 0], "proba_1": p[:, 1]}


def sklearn_model(x: pd.DataFrame, y: np.ndarray, folder: Path) -> Trained:
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=40).fit(x, y)
    own = lambda rows: probabilities_of(model.predict_proba(rows), model.predict(rows))  # noqa: E731
    return Trained("sklearn-skops", model, own, {})


def xgboost_model(x: pd.DataFrame, y: np.ndarray, folder: Path) -> Trained:
    import xgboost

    model = xgboost.XGBClassifier(n_estimators=40, max_depth=4).fit(x, y)
    own = lambda rows: probabilities_of(model.predict_proba(rows), model.predict(rows))  # noqa: E731
    return Trained("xgboost", model, own, {})


def lightgbm_model(x: pd.DataFrame, y: np.ndarray, folder: Path) -> Trained:
    import lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=40, verbose=-1).fit(x, y)
    own = lambda rows: probabilities_of(model.predict_proba(rows), model.predict(rows))  # noqa: E731
    return Trained("lightgbm", model, own, {})


def onnx_model(x: pd.DataFrame, y: np.ndarray, folder: Path) -> Trained:
    """A scikit-learn pipeline exported with skl2onnx: answered as onnxruntime answers."""
    import onnxruntime
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x.to_numpy(), y)
    graph = to_onnx(pipeline, x[:1].to_numpy().astype(np.float32))
    session = onnxruntime.InferenceSession(graph.SerializeToString())

    def own(rows: pd.DataFrame) -> Answer:
        feed = {session.get_inputs()[0].name: rows.to_numpy().astype(np.float32)}
        label, probabilities = session.run(None, feed)
        p = np.array([[row[0], row[1]] for row in probabilities], dtype=np.float64)
        return probabilities_of(p, label)

    return Trained("onnx", graph, own, {})


SCORER = """
import json
from pathlib import Path

import numpy as np
import pyarrow as pa


class Scorer:
    def load(self, folder):
        self.weights = np.array(json.loads((Path(folder) / "weights.json").read_text()))

    def predict(self, table: pa.Table) -> pa.Table:
        x = np.column_stack([column.to_numpy() for column in table.columns])
        score = 1 / (1 + np.exp(-(x @ self.weights)))
        return pa.table({"label": np.where(score > 0.5, "yes", "no"), "score": score})
"""


def python_model(x: pd.DataFrame, y: np.ndarray, folder: Path) -> Trained:
    """A folder of the user's own code: a logistic scorer whose weights are fitted here."""
    code = folder / "scorer"
    code.mkdir()
    weights, *_ = np.linalg.lstsq(x.to_numpy(), 2.0 * y - 1, rcond=None)
    (code / "weights.json").write_text(json.dumps(weights.tolist()))
    (code / "scorer.py").write_text(SCORER)
    inputs = "\n".join(f'{name} = "double"' for name in FEATURES)
    manifest = f'model = "scorer:Scorer"\n[inputs]\n{inputs}\n'
    (code / "mmserve.toml").write_text(manifest + '[outputs]\nlabel = "string"\nscore = "double"\n')
    namespace: dict[str, Any] = {}
    exec(compile(SCORER, "scorer.py", "exec"), namespace)  # the user's class, called directly
    model = namespace["Scorer"]()
    model.load(code)

    def own(rows: pd.DataFrame) -> Answer:
        answer = model.predict(pa.Table.from_pandas(rows, preserve_index=False))
        return {name: answer[name].to_numpy(zero_copy_only=False) for name in ("label", "score")}

    return Trained("python", code, own, {"trust_code": True})


RUNTIMES: list[Callable[[pd.DataFrame, np.ndarray, Path], Trained]] = [
    sklearn_model,
    xgboost_model,
    lightgbm_model,
    onnx_model,
    python_model,
]


@pytest.mark.slow
def test_every_runtime_answers_identically_in_every_mode(tmp_path: Path) -> None:
    x, y = data(2000, seed=1)
    rows, _ = data(ROWS, seed=2)
    table = pa.Table.from_pandas(rows, preserve_index=False)
    with_ids = table.add_column(0, "id", pa.array([f"r{i:04d}" for i in range(ROWS)]))
    source = tmp_path / "rows.parquet"
    pq.write_table(with_ids, source)
    store_url = str(tmp_path / "store")
    registry = Registry.from_settings(Settings(_env_file=None, store_url=store_url))
    trained = {t.runtime: t for t in (make(x, y, tmp_path) for make in RUNTIMES)}
    for name, t in trained.items():
        registry.register(t.model, name, input_example=table.slice(0, 16), **t.options)
    with ExitStack() as stack:
        broker = stack.enter_context(redis_server())
        env = {
            "MMSERVE_STORE_URL": store_url,
            "MMSERVE_BROKER_URL": broker.url,
            "MMSERVE_BATCH__ROOTS": json.dumps([str(tmp_path)]),
        }
        url, _ = stack.enter_context(mmserve_process(env))
        stack.enter_context(mmserve_worker(env, str(tmp_path / "worker.log")))
        client = stack.enter_context(httpx.Client(base_url=url, timeout=120))
        consumers = [Consumer(name, name, "id") for name in trained]
        streams = stack.enter_context(
            streamers(Settings(_env_file=None, store_url=store_url), broker.url, consumers)
        )
        for name, t in trained.items():
            local = registry.load(name).predict(table)
            own = t.own(rows)
            for output in local.column_names:  # the library's own answer, bit for bit
                np.testing.assert_array_equal(local[output].to_numpy(), own[output], name)
            expected = local.to_pylist()
            answers = {
                "V1": v1(client, name, table),
                "V2": v2(url, name, table, local.schema),
                "invocations": invocations(client, name, table, local.schema),
                "async": asynchronous(client, name, table),
                "batch": batch(tmp_path, env, name, source, distributed=False),
                "distributed batch": batch(tmp_path, env, name, source, distributed=True),
                "streaming": streams[name].score(with_ids, local.schema)[0],
            }
            for mode, answer in answers.items():
                assert answer == expected, f"{name} in {mode}"


def v1(client: httpx.Client, name: str, rows: pa.Table) -> list[dict[str, Any]]:
    reply = client.post(f"/v1/models/{name}:predict", json={"instances": rows.to_pylist()})
    assert reply.status_code == 200, reply.text
    return reply.json()["predictions"]


def v2(url: str, name: str, rows: pa.Table, outputs: pa.Schema) -> list[dict[str, Any]]:
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    inputs = []
    for column in rows.column_names:
        tensor = triton.InferInput(column, [rows.num_rows], "FP64")
        tensor.set_data_from_numpy(rows[column].to_numpy(), binary_data=True)
        inputs.append(tensor)
    result = client.infer(name, inputs)
    columns = {}
    for field in outputs:
        values = result.as_numpy(field.name)
        if values.dtype == object:  # BYTES: text labels
            values = np.array([v.decode() for v in values])
        columns[field.name] = pa.array(values).cast(field.type)
    return pa.table(columns).to_pylist()


def invocations(
    client: httpx.Client, name: str, rows: pa.Table, outputs: pa.Schema
) -> list[dict[str, Any]]:
    sink = io.BytesIO()
    pacsv.write_csv(rows, sink, pacsv.WriteOptions(include_header=False))
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    headers["X-Amzn-SageMaker-Target-Model"] = name
    reply = client.post("/invocations", content=sink.getvalue(), headers=headers)
    assert reply.status_code == 200, reply.text
    options = pacsv.ReadOptions(column_names=outputs.names)
    convert = pacsv.ConvertOptions(column_types=outputs)
    return pacsv.read_csv(pa.BufferReader(reply.content), options, None, convert).to_pylist()


def asynchronous(client: httpx.Client, name: str, rows: pa.Table) -> list[dict[str, Any]]:
    sink = io.BytesIO()
    pacsv.write_csv(rows, sink)
    headers = {"Content-Type": "text/csv", "Accept": "application/json"}
    reply = client.post(f"/v1/models/{name}/async", content=sink.getvalue(), headers=headers)
    assert reply.status_code == 202, reply.text
    job = reply.json()["job_id"]
    for _ in poll(120):
        status = client.get(f"/v1/jobs/{job}").json()["status"]
        if status not in ("queued", "running"):
            break
    result = client.get(f"/v1/jobs/{job}/result")
    assert result.status_code == 200, result.text
    return result.json()["predictions"]


def batch(
    folder: Path, env: dict[str, str], name: str, source: Path, distributed: bool
) -> list[dict[str, Any]]:
    output = folder / f"{name}-{'distributed' if distributed else 'local'}"
    argv = [MMSERVE, "batch", "run", "--model", name, "--input", str(source)]
    argv += ["--output", str(output), "--id-column", "id", "--partition-rows", "200"]
    argv += ["--distributed"] if distributed else ["--workers", "2"]
    done = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return pq.read_table(output).sort_by("id").drop_columns(["id"]).to_pylist()


def poll(seconds: float) -> Iterator[None]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield
        time.sleep(0.05)
