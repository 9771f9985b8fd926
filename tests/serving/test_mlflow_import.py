"""``mmserve models import``: models logged here to a real MLflow tracking store (sqlite,
artifacts in a folder) and registered in its model registry are imported by their
``models:/`` and ``runs:/`` URIs, and answer in every mode exactly as the models themselves
do; what cannot be imported is refused, saying why."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from batch.runner import run_batch
from batch.spec import BatchSpec
from serving.errors import ImportRefused, InvalidName, SourceNotFound, UntrustedArtifact
from serving.imports._mlmodel import columns
from serving.imports.mlflow import import_model
from serving.predictor import Predictor
from serving.registry import Registry
from serving.runtimes import runtime
from serving.settings import Settings, StreamSettings
from serving.store import Store
from tests.services import mmserve_server
from tests.test_every_runtime import asynchronous, invocations, v1
from workers.stream import Consumer, LiveModel, Names, RedisEventLog

MMSERVE = str(Path(sys.executable).with_name("mmserve"))
NUMBERS = ["income", "debt", "tenure"]
SCORER = """
import numpy as np
import pandas as pd
import mlflow.pyfunc


class Scorer(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        x = model_input
        score = x["income"] / (1.0 + x["debt"].abs()) + 0.01 * x["tenure"]
        band = np.where(x["plan"] == "pro", "gold", "standard")
        return pd.DataFrame({"score": score, "band": band})
"""

pytestmark = [
    # MLflow's sqlite store uses a loader strategy SQLAlchemy 2.1 deprecates (MLflow's code).
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    # MLflow warns, importing pyfunc, of its own type hints; and of a model logged without
    # an input example: this test logs them as most users do.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*An input example was not provided:UserWarning"),
    # infer_signature's advice on integer columns (it would infer no schema if it raised).
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning"),
]


@dataclass(frozen=True)
class Logged:
    """The MLflow store and what was logged to it, with each model's own answers."""

    tracking_uri: str
    experiment: str
    """Where runs are logged (their artifacts in the test's folder)."""
    pickle_sha256: str
    scorer_run: str
    fraud_run: str
    odd_signature_run: str
    foreign_run: str
    churn: Any
    tricky: Any
    fraud: Any
    scorer: Any


def frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers: two amounts, a whole number of months (an MLflow long) and a plan (text)."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "income": rng.normal(50, 10, rows),
            "debt": rng.normal(20, 5, rows),
            "tenure": rng.integers(0, 120, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
        }
    )
    y = (x["income"] - x["debt"] + 0.1 * x["tenure"] + 5 * (x["plan"] == "pro") > 38).astype(int)
    return x, y.to_numpy()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield log_models(uri, folder)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A local store: what is imported from MLflow is stored as any registered model is."""
    return Registry(Store.from_url(str(tmp_path / "store")))


def log_models(uri: str, folder: Path) -> Logged:
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, DataType, Object, Property, Schema
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
    from xgboost import XGBClassifier

    x, y = frame(400, seed=1)
    columns = ColumnTransformer(
        [("numbers", StandardScaler(), NUMBERS), ("plan", OneHotEncoder(), ["plan"])]
    )
    churn = Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(x, y)
    tricky = make_pipeline(
        FunctionTransformer(lambda v: np.log1p(np.abs(v))), LogisticRegression()
    ).fit(x[NUMBERS], y)
    fraud = XGBClassifier(n_estimators=20, max_depth=3).fit(x[NUMBERS], y)
    namespace: dict[str, Any] = {"__name__": "__main__"}  # a notebook's class: pickled by value
    with warnings.catch_warnings(record=True):  # MLflow's advice to add type hints, which
        exec(SCORER, namespace)  # it shows "once" whatever the filters say: kept from pytest
    scorer = namespace["Scorer"]()

    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("imports", artifact_location=(folder / "art").as_uri())
    quiet: dict[str, Any] = {"name": "model", "pip_requirements": []}
    with mlflow.start_run(experiment_id=experiment):
        signature = infer_signature(x, churn.predict(x))
        mlflow.sklearn.log_model(churn, signature=signature, registered_model_name="churn", **quiet)
        mlflow.sklearn.log_model(
            churn,
            signature=signature,
            registered_model_name="churn",
            serialization_format="cloudpickle",
            **quiet,
        )
    client.set_registered_model_alias("churn", "champion", "1")
    with mlflow.start_run(experiment_id=experiment):
        signature = infer_signature(x[NUMBERS], tricky.predict(x[NUMBERS]))
        mlflow.sklearn.log_model(
            tricky, signature=signature, registered_model_name="tricky",
            serialization_format="cloudpickle", **quiet,
        )  # fmt: skip
    with mlflow.start_run(experiment_id=experiment) as run:
        signature = infer_signature(x[NUMBERS], fraud.predict(x[NUMBERS]))
        mlflow.xgboost.log_model(fraud, signature=signature, registered_model_name="fraud", **quiet)
        fraud_run = run.info.run_id
    with mlflow.start_run(experiment_id=experiment) as run:
        signature = infer_signature(x, scorer.predict(None, x))
        mlflow.pyfunc.log_model(python_model=scorer, signature=signature, **quiet)
        scorer_run = run.info.run_id
    with mlflow.start_run(experiment_id=experiment) as run:
        meta = Object([Property("channel", DataType.string)])
        inputs = Schema([ColSpec(DataType.double, "income"), ColSpec(meta, "meta")])
        odd = ModelSignature(inputs, Schema([ColSpec(DataType.double, "score")]))
        mlflow.pyfunc.log_model(python_model=scorer, signature=odd, **quiet)
        odd_run = run.info.run_id
    with mlflow.start_run(experiment_id=experiment) as run:
        foreign = folder / "foreign"
        foreign.mkdir()
        (foreign / "MLmodel").write_text("flavors:\n  h2o: {data: model.h2o}\n  crate: {}\n")
        mlflow.log_artifacts(str(foreign), "model")
        foreign_run = run.info.run_id
    pickled = mlflow.artifacts.download_artifacts("models:/churn/2", dst_path=str(folder / "v2"))
    sha256 = hashlib.sha256((Path(pickled) / "model.pkl").read_bytes()).hexdigest()
    return Logged(
        uri,
        experiment,
        sha256,
        scorer_run,
        fraud_run,
        odd_run,
        foreign_run,
        churn,
        tricky,
        fraud,
        scorer,
    )


def own_answers(logged: Logged, name: str, x: pd.DataFrame) -> dict[str, np.ndarray]:
    """What each model itself answers, as it would registered directly."""
    if name == "scorer":
        answer = logged.scorer.predict(None, x)
        return {"score": answer["score"].to_numpy(), "band": answer["band"].to_numpy(object)}
    model = {"churn": logged.churn, "tricky": logged.tricky, "fraud": logged.fraud}[name]
    rows = x if name == "churn" else x[NUMBERS]
    p = model.predict_proba(rows)
    return {"label": model.predict(rows), "proba_0": p[:, 0], "proba_1": p[:, 1]}


def mmserve(store: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MMSERVE_STORE_URL": str(store), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.Popen(
        [MMSERVE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_imported_models_answer_as_the_models_do_in_every_mode(
    logged: Logged, tmp_path: Path, redis_url: str
) -> None:
    store = tmp_path / "store"
    imports = {
        "churn": ["models:/churn@champion", "--name", "churn", "--alias", "production"],
        "fraud": ["models:/fraud/1", "--name", "fraud"],
        "scorer": [f"runs:/{logged.scorer_run}/model", "--name", "scorer", "--trust-code"],
    }
    running = {name: mmserve(store, "models", "import", *a) for name, a in imports.items()}
    done = {name: (p.communicate(timeout=120), p.returncode) for name, p in running.items()}
    for name, ((stdout, stderr), code) in done.items():
        assert code == 0, stdout + stderr
        assert stdout.startswith(f"imported {imports[name][0]} as {name}:1 (")
    registry = Registry(Store.from_url(str(store)))
    assert registry.resolve("churn@production") == ("churn", 1)
    assert [registry.get(n).flavor for n in imports] == ["sklearn-skops", "xgboost", "python"]

    x, _ = frame(120, seed=2)
    table = pa.Table.from_pandas(x, preserve_index=False)
    ids = pa.array([f"r{i:03d}" for i in range(len(x))])
    source = tmp_path / "rows.parquet"
    pq.write_table(table.add_column(0, "id", ids), source)
    settings = Settings(_env_file=None, store_url=str(store))
    expected = {}
    for name in imports:
        local = registry.load(name).predict(table)
        own = own_answers(logged, name, x)
        assert local.column_names == list(own)
        for output, values in own.items():  # the model's own answer, bit for bit
            np.testing.assert_array_equal(local[output].to_numpy(zero_copy_only=False), values)
        expected[name] = local.to_pylist()
        spec = BatchSpec(model=name, input=str(source), output=str(tmp_path / name), id_column="id")
        run_batch(spec, registry, settings)
        scored = pq.read_table(tmp_path / name).sort_by("id").drop_columns(["id"])
        assert scored.to_pylist() == expected[name], f"{name} in batch"
        assert streamed(registry, redis_url, name, table, ids) == expected[name], name
    served = mmserve_server({"MMSERVE_STORE_URL": str(store)})
    with served as url, httpx.Client(base_url=url, timeout=60) as client:
        for name, answer in expected.items():
            rows = table.select([f.name for f in registry.get(name).inputs])
            schema = registry.load(name).predict(rows.slice(0, 1)).schema
            assert v1(client, name, rows) == answer, f"{name} in real time"
            assert invocations(client, name, rows, schema) == answer, f"{name} SageMaker"
            assert asynchronous(client, name, rows) == answer, f"{name} async"


def streamed(
    registry: Registry, url: str, name: str, table: pa.Table, ids: pa.Array
) -> list[dict[str, Any]]:
    """The rows scored by a stream consumer on the real Redis, read back in their types."""
    prefix = f"mlflow-import.{name}.{os.getpid()}"
    names = Names(f"{prefix}.in", f"{prefix}.out", f"{prefix}.dlq", prefix, "c1")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        with client.pipeline(transaction=False) as pipe:
            for i, row in zip(ids.to_pylist(), table.to_pylist(), strict=True):
                pipe.xadd(names.source, {"id": i, "data": json.dumps(row)})
            pipe.execute()
        settings = StreamSettings(start="0", block_ms=20, id_field="id", batch_size=4096)
        log = RedisEventLog(client, names, start="0", claim_idle_ms=settings.claim_idle_ms)
        consumer = Consumer(log, LiveModel(registry, name, settings.follow), settings)
        assert consumer.open(threading.Event())
        while client.xlen(names.sink) < table.num_rows:
            consumer.step()
        assert client.xlen(names.dead_letter) == 0
        outputs = registry.get(name).outputs
        entries = sorted((f for _, f in client.xrange(names.sink)), key=lambda f: f["id"])
    finally:
        client.delete(names.source, names.sink, names.dead_letter)
        client.close()
    expected = registry.load(name).predict(table.slice(0, 1)).schema
    texts = {o: [e[o] for e in entries] for o in outputs}
    return pa.table(texts).cast(expected).to_pylist()


def test_a_pickled_model_is_imported_only_when_trusted_then_as_skops(
    logged: Logged, registry: Registry
) -> None:
    with pytest.raises(UntrustedArtifact) as refused:
        import_model(registry, "models:/churn/2", "legacy", tracking_uri=logged.tracking_uri)
    assert refused.value.message == (
        "refusing to load MLflow model models:/churn/2: its scikit-learn model is a cloudpickle "
        "file (model.pkl), which runs arbitrary code when loaded; import it with --trust-pickle "
        "(trust_pickle=True) only if you trust its author"
    )
    assert registry.models() == []
    mv = import_model(
        registry, "models:/churn/2", "legacy", tracking_uri=logged.tracking_uri, trust_pickle=True
    )
    assert (mv.flavor, mv.trust_pickle) == ("sklearn-skops", False)
    assert mv.tags["mlflow.pickle_sha256"] == logged.pickle_sha256
    x, _ = frame(50, seed=3)
    rows = pa.Table.from_pandas(x, preserve_index=False)
    registry.register(logged.churn, "direct", input_example=rows.slice(0, 8))
    assert registry.load("legacy").predict(rows) == registry.load("direct").predict(rows)


def test_a_pickle_skops_cannot_hold_stays_a_trusted_pickle(
    logged: Logged, registry: Registry
) -> None:
    mv = import_model(
        registry, "models:/tricky/1", "tricky", tracking_uri=logged.tracking_uri, trust_pickle=True
    )
    assert (mv.flavor, mv.trust_pickle) == ("sklearn-pickle", True)
    x, _ = frame(50, seed=4)
    rows = pa.Table.from_pandas(x[NUMBERS])
    # The model as registered directly would answer, had joblib a way to pickle its lambda.
    direct = Predictor(mv, runtime("sklearn-pickle").wrap(logged.tricky, mv))
    assert registry.load("tricky").predict(rows) == direct.predict(rows)


def test_the_version_records_where_it_came_from(logged: Logged, registry: Registry) -> None:
    mv = import_model(registry, "models:/fraud/1", "fraud", tracking_uri=logged.tracking_uri)
    model_id = mv.tags.pop("mlflow.model_id")
    assert model_id.startswith("m-")
    assert mv.tags == {
        "mlflow.source": "models:/fraud/1",
        "mlflow.tracking_uri": logged.tracking_uri,
        "mlflow.model_name": "fraud",
        "mlflow.model_version": "1",
        "mlflow.run_id": logged.fraud_run,
        "mlflow.flavor": "xgboost",
    }
    assert [(f.name, f.dtype) for f in mv.inputs] == [
        ("income", "double"),
        ("debt", "double"),
        ("tenure", "int64"),
    ]
    scorer = import_model(
        registry, f"runs:/{logged.scorer_run}/model", "scorer",
        tracking_uri=logged.tracking_uri, trust_code=True, tags={"team": "risk"},
    )  # fmt: skip
    assert scorer.tags["mlflow.run_id"] == logged.scorer_run
    assert (scorer.tags["mlflow.flavor"], scorer.tags["team"]) == ("python_function", "risk")
    assert "mlflow.model_name" not in scorer.tags
    assert [(f.name, f.dtype) for f in scorer.inputs][-1] == ("plan", "string")
    assert scorer.output_types == {"score": "double", "band": "string"}


def test_what_mlflow_does_not_have_is_named(logged: Logged, registry: Registry) -> None:
    where = f"(MLflow at {logged.tracking_uri})"
    missing = {
        "models:/churn/9": "MLflow model 'churn' has no version 9",
        "models:/churn@gold": "MLflow model 'churn' has no alias 'gold'",
        "models:/nobody/1": "MLflow has no registered model 'nobody'",
        "models:/nobody@gold": "MLflow has no registered model 'nobody'",
        f"runs:/{'0' * 32}/model": f"MLflow has no run '{'0' * 32}'",
        f"runs:/{logged.fraud_run}/elsewhere": (
            f"MLflow has no artifacts at 'runs:/{logged.fraud_run}/elsewhere'"
        ),
    }
    for source, what in missing.items():
        with pytest.raises(SourceNotFound) as found:
            import_model(registry, source, "m", tracking_uri=logged.tracking_uri)
        assert found.value.message == f"cannot import {source}: {what} {where}"
    for source in ("churn/3", "models:/churn", "runs:/abc/../model", "models:/churn/0"):
        with pytest.raises(InvalidName, match="expected models:/<name>/<version>"):
            import_model(registry, source, "m", tracking_uri=logged.tracking_uri)
    assert registry.models() == []


@pytest.mark.slow
def test_the_cli_fails_naming_what_is_missing(logged: Logged, tmp_path: Path) -> None:
    done = mmserve(tmp_path, "models", "import", "models:/churn@gold", "--name", "churn")
    stdout, stderr = done.communicate(timeout=120)
    assert done.returncode == 1, stdout + stderr
    assert stderr == (
        "error: cannot import models:/churn@gold: MLflow model 'churn' has no alias 'gold' "
        f"(MLflow at {logged.tracking_uri})\n"
    )


def test_untrusted_code_an_odd_signature_and_a_foreign_flavor_are_refused(
    logged: Logged, registry: Registry
) -> None:
    scorer = f"runs:/{logged.scorer_run}/model"
    with pytest.raises(UntrustedArtifact, match="import it with --trust-code"):
        import_model(registry, scorer, "scorer", tracking_uri=logged.tracking_uri)
    odd = f"runs:/{logged.odd_signature_run}/model"
    with pytest.raises(ImportRefused) as refused:
        import_model(registry, odd, "odd", tracking_uri=logged.tracking_uri, trust_code=True)
    assert refused.value.message.startswith(
        f"cannot import {odd}: its input column 'meta' is of MLflow type 'object', which "
        "mmserve has no column type for (it takes double, float, long, integer, boolean, "
    )
    foreign = f"runs:/{logged.foreign_run}/model"
    with pytest.raises(ImportRefused) as refused:
        import_model(registry, foreign, "foreign", tracking_uri=logged.tracking_uri)
    assert refused.value.message == (
        f"cannot import {foreign}: its flavors are h2o, crate; mmserve imports sklearn, "
        "xgboost, lightgbm, onnx, python_function"
    )
    with pytest.raises(ImportRefused, match="it has no onnx flavor; its flavors: "):
        import_model(
            registry, "models:/fraud/1", "f", tracking_uri=logged.tracking_uri, mlflow_flavor="onnx"
        )
    assert registry.models() == []


def test_signature_types_become_feature_types() -> None:
    specs = [
        {"type": t, "name": t, "required": t != "binary"}
        for t in ("double", "float", "long", "integer", "boolean", "string", "binary", "datetime")
    ]
    specs.append({"type": "array", "items": {"type": "long"}, "name": "ids"})
    found = columns(specs, "input", "m")
    assert (found.kind, found.named, found.nullable) == ("frame", True, ["binary"])
    assert found.schema() == {
        "double": "double",
        "float": "float",
        "long": "int64",
        "integer": "int32",
        "boolean": "bool",
        "string": "string",
        "binary": "binary",
        "datetime": "timestamp[ns]",
        "ids": "list<item: int64>",
    }
    tensor = columns(
        [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2, 3]}}], "input", "m"
    )
    assert (tensor.kind, tensor.named, tensor.shapes) == ("tensor", False, {"input": [2, 3]})
    assert tensor.schema() == {"input": "fixed_size_list<item: float>[6]"}
    named = [
        {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}, "name": "a"},
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}, "name": "b"},
    ]
    assert columns(named, "output", "m").schema() == {
        "a": "int64",
        "b": "fixed_size_list<item: double>[4]",
    }
    ragged = {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, -1]}, "name": "x"}
    with pytest.raises(
        ImportRefused, match=r"its input tensor 'x' is of dtype 'float32' and shape \[-1, -1\]"
    ):
        columns([ragged], "input", "m")
    with pytest.raises(ImportRefused, match="its output column 'tags' is of MLflow type 'map'"):
        columns([{"type": "map", "values": {"type": "string"}, "name": "tags"}], "output", "m")


SUMMER = """
import numpy as np
import mlflow.pyfunc


class Summer(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input).reshape(len(model_input), -1).sum(axis=1)
"""


def test_lightgbm_onnx_and_tensor_models_are_imported(
    logged: Logged, registry: Registry, tmp_path: Path
) -> None:
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature
    from onnx import TensorProto, helper, numpy_helper

    x, y = frame(300, seed=5)
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1}, lightgbm.Dataset(x[NUMBERS], y), 10
    )
    wide = np.random.default_rng(6).normal(size=(300, 300)).astype(np.float32)
    weights = numpy_helper.from_array(wide[:, :1].copy(), "w")  # 1200 bytes: saved beside
    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "wide",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 300])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
            [weights],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
    )
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with warnings.catch_warnings(record=True):  # as for SCORER
        exec(SUMMER, namespace)
    summer = namespace["Summer"]()
    cubes = np.random.default_rng(7).normal(size=(20, 2, 3)).astype(np.float32)
    quiet: dict[str, Any] = {"name": "model", "pip_requirements": []}
    runs = {}
    with mlflow.start_run(experiment_id=logged.experiment) as run:
        signature = infer_signature(x[NUMBERS], booster.predict(x[NUMBERS]))
        mlflow.lightgbm.log_model(booster, signature=signature, **quiet)
        runs["lightgbm"] = run.info.run_id
    with mlflow.start_run(experiment_id=logged.experiment) as run:
        whole = graph.SerializeToString()  # saving moves its weights out, in place
        mlflow.onnx.log_model(graph, **quiet)  # its weights in files beside the graph
        runs["onnx"] = run.info.run_id
    with mlflow.start_run(experiment_id=logged.experiment) as run:
        signature = infer_signature(cubes, summer.predict(None, cubes))
        mlflow.pyfunc.log_model(python_model=summer, signature=signature, **quiet)
        runs["summer"] = run.info.run_id
    saved = mlflow.artifacts.download_artifacts(
        f"runs:/{runs['onnx']}/model", dst_path=str(tmp_path)
    )
    assert len(list(Path(saved).glob("*.data"))) == 1  # the weights, beside the graph

    uri = logged.tracking_uri
    mv = import_model(registry, f"runs:/{runs['lightgbm']}/model", "gbm", tracking_uri=uri)
    assert (mv.flavor, mv.tags["mlflow.flavor"]) == ("lightgbm", "lightgbm")
    registry.register(booster, "gbm-direct")
    rows = pa.Table.from_pandas(x[NUMBERS].astype("float64"))
    assert registry.load("gbm").predict(rows) == registry.load("gbm-direct").predict(rows)

    mv = import_model(registry, f"runs:/{runs['onnx']}/model", "wide", tracking_uri=uri)
    assert mv.flavor == "onnx"
    registry.register(whole, "wide-direct")
    rows = pa.table({f"f{i}": wide[:, i] for i in range(wide.shape[1])})
    assert registry.load("wide").predict(rows) == registry.load("wide-direct").predict(rows)

    source = f"runs:/{runs['summer']}/model"
    mv = import_model(registry, source, "summer", tracking_uri=uri, trust_code=True)
    assert [(f.name, f.dtype, f.shape) for f in mv.inputs] == [
        ("input", "fixed_size_list<item: float>[6]", [2, 3])
    ]
    assert (mv.outputs, mv.output_types) == (["prediction"], {"prediction": "float"})
    flat = pa.FixedSizeListArray.from_arrays(pa.array(cubes.ravel()), 6)
    answer = registry.load("summer").predict(pa.table({"input": flat}))
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), summer.predict(None, cubes))


def test_a_missing_sqlite_database_is_named_not_made(registry: Registry, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/typo/mlflow.db"
    with pytest.raises(SourceNotFound) as missing:
        import_model(registry, "models:/churn/1", "churn", tracking_uri=uri)
    assert missing.value.message == (
        f"cannot import models:/churn/1: there is no MLflow database at {tmp_path}/typo/mlflow.db "
        f"(MLflow at {uri})"
    )
    assert not (tmp_path / "typo").exists()
