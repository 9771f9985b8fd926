"""ONNX models (skl2onnx exports and small hand-built graphs) registered as a ModelProto, as
bytes and as a ``.onnx`` file: answers equal onnxruntime's own, bit for bit; bytes that are
no self-contained ONNX model are refused, never a crash (fuzzed in a child process)."""

from __future__ import annotations

import os
import pickle
import random
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from serving import codecs
from serving.errors import InvalidName, MMServeError, OutOfRange, UntrustedArtifact
from serving.metadata import ModelVersion
from serving.registry import Registry
from serving.store import Store
from tests import fixtures
from tests.serving.test_cli import run

X, Y = fixtures.numeric_data()
ROWS = fixtures.numeric_table(X[:37])


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(Store.from_url(str(tmp_path / "store")))


def reference(model: onnx.ModelProto, feeds: dict[str, Any]) -> list[Any]:
    """onnxruntime's own answer, from a session made as its documentation makes one."""
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)


def register(
    registry: Registry, model: onnx.ModelProto, how: str, tmp_path: Path, **kw: Any
) -> ModelVersion:
    if how == "file":
        path = tmp_path / "churn.onnx"
        onnx.save_model(model, path)
        return registry.register(path, "churn-onnx", **kw)
    return registry.register(model if how == "object" else model.SerializeToString(), "m", **kw)


def probabilities(raw: Any, classes: list[Any]) -> np.ndarray:
    """The reference's probabilities as a float64 matrix (a ZipMap's, or a tensor's)."""
    if isinstance(raw, list):
        return np.array([[row[c] for c in classes] for row in raw], np.float64)
    return raw.astype(np.float64)


@pytest.mark.parametrize(
    ("make", "zipmap", "how"),
    [
        (fixtures.logistic, True, "object"),
        (fixtures.logistic, False, "bytes"),
        (fixtures.forest, True, "file"),
        (fixtures.forest, False, "object"),
    ],
)
def test_classifier_answers_as_onnxruntime(
    registry: Registry, tmp_path: Path, make: Any, zipmap: bool, how: str
) -> None:
    model = to_onnx(make(), X[:1].astype(np.float32), options={"zipmap": zipmap})
    mv = register(registry, model, how, tmp_path)
    assert (mv.flavor, mv.task, mv.method, mv.artifact) == (
        "onnx",
        "classifier",
        "predict_proba",
        "model.onnx",
    )
    assert mv.outputs == ["label", "proba_0", "proba_1"]
    assert (mv.classes, mv.output_types) == ([0, 1], {"label": "int64"})
    assert [(f.name, f.dtype) for f in mv.inputs] == [(f"f{i}", "double") for i in range(5)]
    assert set(mv.libraries) >= {"onnxruntime", "onnx"}
    # A tree ensemble answers each row alone: no padding (a LinearClassifier's MatMul may not)
    assert mv.row_block == (1 if make is fixtures.forest else 8)

    answer = registry.load(mv.ref).predict(ROWS)
    labels, raw = reference(model, {"X": X[:37].astype(np.float32)})
    assert answer.schema == pa.schema(
        [("label", pa.int64()), ("proba_0", pa.float64()), ("proba_1", pa.float64())]
    )
    assert answer["label"].to_pylist() == labels.tolist()
    expected = probabilities(raw, [0, 1])
    np.testing.assert_array_equal(answer["proba_0"].to_numpy(), expected[:, 0])
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), expected[:, 1])


def test_float64_classifier(registry: Registry) -> None:
    """skl2onnx's float64 classifier (with zipmap=False: its ZipMap takes float32 only)
    looks its label up in a constant of classes, and answers float64 probabilities."""
    model = to_onnx(
        LogisticRegression().fit(X, np.array(["no", "yes"])[Y]), X[:1], options={"zipmap": False}
    )
    mv = registry.register(model, "wide")
    assert (mv.task, mv.outputs, mv.classes) == (
        "classifier",
        ["label", "proba_no", "proba_yes"],
        ["no", "yes"],
    )
    answer = registry.load(mv.ref).predict(ROWS)
    labels, raw = reference(model, {"X": X[:37]})
    assert raw.dtype == np.float64
    assert answer["label"].to_pylist() == labels.tolist()
    np.testing.assert_array_equal(answer["proba_yes"].to_numpy(), raw[:, 1])


def test_pipeline_with_string_classes(registry: Registry, tmp_path: Path) -> None:
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    pipe.fit(X, np.array(["stay", "churn"])[Y])
    model = to_onnx(pipe, X[:1].astype(np.float32))
    mv = register(registry, model, "file", tmp_path, input_example=ROWS)
    assert (mv.outputs, mv.classes) == (["label", "proba_churn", "proba_stay"], ["churn", "stay"])
    assert mv.output_types == {"label": "string"}

    answer = registry.load(mv.ref).predict(ROWS)
    labels, raw = reference(model, {"X": X[:37].astype(np.float32)})
    assert answer["label"].type == pa.string()
    assert answer["label"].to_pylist() == labels.tolist()
    assert set(labels.tolist()) == {"stay", "churn"}
    expected = probabilities(raw, ["churn", "stay"])
    np.testing.assert_array_equal(answer["proba_churn"].to_numpy(), expected[:, 0])
    np.testing.assert_array_equal(answer["proba_stay"].to_numpy(), expected[:, 1])
    assert registry.load(mv.ref).model.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regressor(registry: Registry, dtype: Any) -> None:
    model = to_onnx(fixtures.regressor(), X[:1].astype(dtype))
    mv = registry.register(model, "reg")
    assert (mv.task, mv.method, mv.outputs, mv.output_types) == (
        "regressor",
        "predict",
        ["prediction"],
        {},
    )
    answer = registry.load(mv.ref).predict(ROWS)
    (expected,) = reference(model, {"X": X[:37].astype(dtype)})
    assert answer.schema == pa.schema([("prediction", pa.float64())])
    np.testing.assert_array_equal(answer["prediction"].to_numpy(), expected[:, 0].astype(float))


def test_float32_graph_refuses_what_float32_cannot_hold(registry: Registry) -> None:
    mv = registry.register(to_onnx(fixtures.regressor(), X[:1].astype(np.float32)), "reg")
    rows = fixtures.numeric_table(np.array([[1.0, 2.0, 3.0, 4.0, 1e39]]))
    with pytest.raises(OutOfRange) as refused:
        registry.load(mv.ref).predict(rows)
    assert refused.value.message == (
        "column 'f4' has 1e+39, beyond the float32 range the model computes in (±3.4e+38), at row 0"
    )
    wide = registry.register(to_onnx(fixtures.regressor(), X[:1]), "wide")  # float64 inputs
    assert registry.load(wide.ref).predict(rows).num_rows == 1


def test_one_input_per_feature_with_strings(registry: Registry) -> None:
    frame, y = fixtures.mixed_frame()
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
        ]
    )
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(frame, y)
    types = [("age", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1]))]
    types += [("plan", StringTensorType([None, 1])), ("region", StringTensorType([None, 1]))]
    model = to_onnx(pipe, initial_types=types)
    mv = registry.register(model.SerializeToString(), "mixed")  # no example: the graph says
    assert [(f.name, f.dtype) for f in mv.inputs] == [
        ("age", "double"),
        ("income", "double"),
        ("plan", "string"),
        ("region", "string"),
    ]
    answer = registry.load(mv.ref).predict(pa.Table.from_pandas(frame[:29]))
    feeds = {c: frame[[c]].to_numpy()[:29] for c in ["age", "income", "plan", "region"]}
    for number in ("age", "income"):
        feeds[number] = feeds[number].astype(np.float32)
    labels, raw = reference(model, feeds)
    assert answer["label"].to_pylist() == labels.tolist()
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), probabilities(raw, [0, 1])[:, 1])


def _graph() -> onnx.ModelProto:
    """int64 ``n`` [N], string ``name`` [N], double ``x`` [N, 1] in; ``total`` = n + x,
    ``tag`` = name and ``n`` back out: a graph that is no classifier nor regressor."""
    nodes = [
        helper.make_node("Cast", ["n"], ["n_double"], to=TensorProto.DOUBLE),
        helper.make_node("Unsqueeze", ["n_double", "axes"], ["n_column"]),
        helper.make_node("Add", ["n_column", "x"], ["total"]),
        helper.make_node("Identity", ["name"], ["tag"]),
        helper.make_node("Identity", ["n"], ["n_out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("n", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("name", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.DOUBLE, [None, 1]),
            helper.make_tensor_value_info("tag", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("n_out", TensorProto.INT64, [None]),
        ],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_any_graph_answers_its_outputs_by_name(registry: Registry) -> None:
    model = _graph()
    mv = registry.register(model, "graph")
    assert [(f.name, f.dtype) for f in mv.inputs] == [
        ("n", "int64"),
        ("name", "string"),
        ("x", "double"),
    ]
    assert (mv.task, mv.method, mv.outputs) == (
        "transformer",
        "transform",
        ["total", "tag", "n_out"],
    )
    assert mv.output_types == {"tag": "string", "n_out": "int64"}
    rows = pa.table({"n": [2**53 + 1, -3], "name": ["ünï", ""], "x": [0.5, 1e300]})
    answer = registry.load(mv.ref).predict(rows)
    total, tag, n_out = reference(
        model,
        {
            "n": np.array([2**53 + 1, -3]),
            "name": np.array(["ünï", ""], object),
            "x": np.array([[0.5], [1e300]]),
        },
    )
    assert answer.to_pydict() == {
        "total": total[:, 0].tolist(),
        "tag": tag.tolist(),
        "n_out": [2**53 + 1, -3],
    }
    assert n_out.tolist() == [2**53 + 1, -3]


def test_a_fixed_batch_is_run_a_call_at_a_time(registry: Registry) -> None:
    """A graph exported with no dynamic batch axis (torch.onnx.export's default) takes one
    row per call: every row is run as it would be alone."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [5, 2], np.arange(10.0) / 7)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["output"])],
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    mv = registry.register(model, "fixed")
    assert mv.outputs == ["prediction_0", "prediction_1"]
    answer = registry.load(mv.ref).predict(ROWS)
    expected = np.vstack([reference(model, {"input": row[None]})[0] for row in X[:37].astype("f4")])
    np.testing.assert_array_equal(answer["prediction_0"].to_numpy(), expected[:, 0])
    np.testing.assert_array_equal(answer["prediction_1"].to_numpy(), expected[:, 1])


def test_a_rows_answer_does_not_depend_on_its_batch(registry: Registry) -> None:
    """One thread per session: onnxruntime's parallel tree ensemble sums its trees in an
    order that depends on the batch size, so a row's probabilities changed with its batch."""
    forest = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0).fit(X, Y)
    mv = registry.register(to_onnx(forest, X[:1].astype(np.float32)), "forest")
    assert mv.row_block == 1  # so batches of 5 rows are called with 5 rows
    predictor = registry.load(mv.ref)
    whole = predictor.predict(fixtures.numeric_table(X[:300]))
    for start in (0, 5, 150):
        assert predictor.predict(fixtures.numeric_table(X[start : start + 5])) == whole.slice(
            start, 5
        )


def test_bytes_that_are_no_onnx_model_are_refused(registry: Registry, tmp_path: Path) -> None:
    pickled = tmp_path / "churn.onnx"
    pickled.write_bytes(pickle.dumps(fixtures.logistic()))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    refusals = {
        pickled: f"refusing to load {pickled}: it is not an ONNX model: its bytes are no ONNX "
        "ModelProto",
        empty: f"refusing to load {empty}: it is not an ONNX model: The model does not have an "
        "ir_version set properly.",
        b"\x08\x07garbage": "refusing to load the ONNX model: it is not an ONNX model: its bytes "
        "are no ONNX ModelProto",
    }
    for artifact, message in refusals.items():
        with pytest.raises(UntrustedArtifact) as refused:
            registry.register(artifact, "churn")
        assert refused.value.message == message
    assert registry.models() == []


def test_a_graph_reading_files_outside_itself_is_refused(registry: Registry) -> None:
    model = to_onnx(fixtures.regressor(), X[:1].astype(np.float32))
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("float_data")
    weights.external_data.add(key="location", value="../../../../etc/passwd")
    model.graph.initializer.append(weights)
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(model, "churn")
    assert refused.value.message == (
        "refusing to load the ONNX model: it refers to external data files, which are not "
        "loaded: save the model with its weights inside "
        "(onnx.save_model(model, path, save_as_external_data=False))"
    )


@pytest.mark.parametrize("how", ["object", "file"])
def test_a_graph_onnxruntime_cannot_load_is_refused(
    registry: Registry, tmp_path: Path, how: str
) -> None:
    """skl2onnx writes a float64 classifier's ZipMap, which onnxruntime rejects."""
    model = to_onnx(fixtures.logistic(), X[:1])
    with pytest.raises(UntrustedArtifact) as refused:
        register(registry, model, how, tmp_path)
    what = tmp_path / "churn.onnx" if how == "file" else "the ONNX model"
    assert refused.value.message == (
        f"refusing to load {what}: onnxruntime cannot load it: This is an invalid model. "
        "Type Error: Type 'tensor(double)' of input parameter (probabilities) of operator "
        "(ZipMap) in node (ZipMap) is invalid."
    )


def test_a_tree_whose_links_loop_is_refused(registry: Registry) -> None:
    """onnxruntime would walk it for ever (found by fuzzing: the registration hung)."""
    model = to_onnx(fixtures.forest(), X[:1].astype(np.float32))
    trees = next(n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier")
    attributes = {a.name: list(a.ints or a.strings) for a in trees.attribute}
    branch = next(  # a branch of the second tree (onnxruntime catches it in the first)
        i
        for i, (tree, node) in enumerate(
            zip(attributes["nodes_treeids"], attributes["nodes_nodeids"], strict=True)
        )
        if tree == 1 and node > 0 and attributes["nodes_modes"][i] != b"LEAF"
    )
    links = next(a for a in trees.attribute if a.name == "nodes_truenodeids")
    links.ints[branch] = 0  # back to its tree's root
    with pytest.raises(UntrustedArtifact) as refused:
        registry.register(model, "churn")
    assert refused.value.message == (
        "refusing to load the ONNX model: it is not an ONNX model: its TreeEnsembleClassifier "
        "holds a tree whose links loop"
    )


def test_a_graph_that_takes_no_table_is_refused(registry: Registry) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["same"])],
        "images",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, [None, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidName) as refused:
        registry.register(model, "images")
    assert refused.value.message == (
        "invalid ONNX inputs 'image [None, 3, 8, 8]': expected one [N, K] tensor or one "
        "[N, 1] tensor per feature"
    )


@pytest.mark.slow
def test_cli_registers_and_predicts_a_onnx_file(tmp_path: Path) -> None:
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, Y)
    onnx.save_model(to_onnx(pipe, X[:1].astype(np.float32)), tmp_path / "churn.onnx")
    codecs.write_file(fixtures.numeric_table(X[:3]), tmp_path / "rows.csv")
    store = tmp_path / "store"
    registered = run(
        store,
        "models",
        "register",
        str(tmp_path / "churn.onnx"),
        "--name",
        "churn-onnx",
        "--input-example",
        str(tmp_path / "rows.csv"),
    ).stdout
    assert registered.startswith("registered churn-onnx:1 (onnx, classifier, sha256 ")
    scored = codecs.read_file(tmp_path / "rows.csv")  # the values as the CLI reads them
    run(
        store,
        "predict",
        "churn-onnx",
        "-i",
        str(tmp_path / "rows.csv"),
        "-o",
        str(tmp_path / "out.parquet"),
    )
    answer = codecs.read_file(tmp_path / "out.parquet")
    x = np.column_stack([c.to_numpy() for c in scored.columns]).astype(np.float32)
    labels, raw = reference(onnx.load_model(tmp_path / "churn.onnx"), {"X": x})
    assert answer["label"].to_pylist() == labels.tolist()
    np.testing.assert_array_equal(answer["proba_1"].to_numpy(), probabilities(raw, [0, 1])[:, 1])


# -- fuzzing: hostile bytes registered as .onnx, in a child process ----------------------

SEED, CASES = 0, 300


def test_no_onnx_file_crashes_the_process(tmp_path: Path) -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.serving.test_runtime_onnx",
            str(tmp_path),
            str(SEED),
            str(CASES),
        ],
        capture_output=True,
        timeout=300,
        cwd=os.getcwd(),
    )
    lines = child.stdout.decode().splitlines()
    last = next((line for line in reversed(lines) if line.startswith("case ")), "no case")
    found = [line for line in lines if not line.startswith("case ")]
    assert child.returncode == 0, (
        f"exit {child.returncode} at {last!r} (python -m tests.serving.test_runtime_onnx "
        f"<folder> {SEED} {CASES} replays it)\n" + "\n".join(found) + child.stderr.decode()[-2000:]
    )
    assert found[-1].startswith("no failures; scored ")


_EXTREMES = [-1, 0, 1, 7, 2**31 - 1, -(2**31), 2**63 - 1, 10**9]


def _mutated_graph(rng: random.Random, model: onnx.ModelProto) -> bytes:
    """``model`` with a few of its attributes, shapes or wires changed: bytes that parse and
    often check, so that onnxruntime's own loader and kernels get to see them."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for _ in range(rng.choice([1, 1, 2, 3])):
        node = rng.choice(list(model.graph.node))
        edit = rng.randrange(4)
        if edit < 2 and node.attribute:
            attribute = rng.choice(list(node.attribute))
            for values, choices in [
                (attribute.ints, _EXTREMES),
                (attribute.floats, [float("nan"), float("inf"), -1e38, 0.0]),
                (attribute.strings, [b"", b"LEAF", b"BRANCH_LT", b"\xff"]),
            ]:
                if len(values) and edit == 0:
                    values[rng.randrange(len(values))] = rng.choice(choices)  # type: ignore[index]
                elif len(values):
                    del values[rng.randrange(len(values)) :]
        elif edit == 2:
            port = rng.choice([*model.graph.input, *model.graph.output])
            dims = port.type.tensor_type.shape.dim
            if dims:
                rng.choice(list(dims)).dim_value = rng.choice([0, 1, 2, 7, 10**9])
            else:
                port.type.tensor_type.elem_type = rng.choice([0, 1, 7, 8, 11, 99])
        elif node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(["X", "", "nope", *node.output])
    return model.SerializeToString()


def _fuzz(folder: Path, seed: int, cases: int) -> int:
    """Register mutated bytes (a protobuf's, and a graph's) with an input example, one after
    the other, as a ModelProto's bytes and, every hundredth, as a ``.onnx`` file (which the
    registry reads in a child process first): anything but an mmserve error is a failure,
    and a crash, a memory blow-up past the cap or a case running past 30 s kills the child
    (the test names the last case)."""
    from tests.serving._fuzz import MEMORY_CAP, mutate

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    registry = Registry(Store.from_url(str(folder / "store")))
    rng = random.Random(f"onnx:{seed}")
    models = [
        to_onnx(fixtures.forest(), X[:1].astype(np.float32), options={"zipmap": zipmap})
        for zipmap in (True, False)
    ]
    failures, scored = [], 0
    for case in range(cases):
        model = rng.choice(models)
        body = mutate(rng, model.SerializeToString()) if case % 2 else _mutated_graph(rng, model)
        print(f"case {case}", flush=True)
        signal.alarm(30)  # a case still running then (a loop in native code) kills the child
        artifact: Path | bytes = body
        if case % 100 == 99:
            artifact = folder / f"case-{case}.onnx"
            artifact.write_bytes(body)
        try:
            registry.register(artifact, "fuzz", input_example=ROWS.slice(0, 9))
            scored += 1
        except MMServeError:
            pass
        except Exception as err:  # anything else would be a traceback or a 500
            failures.append(f"failed case {case}: {type(err).__name__}: {err!s:.200}")
        signal.alarm(0)
    print("\n".join(failures) or f"no failures; scored {scored}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_fuzz(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
