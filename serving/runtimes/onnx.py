"""ONNX: graphs run by onnxruntime, their inputs and outputs read from the graph.

Inputs: one ``[N, K]`` tensor (features ``f0..f<K-1>``, or an input example's names) or one
``[N]`` / ``[N, 1]`` tensor per feature, named after it; float, double, int64 or string.
Outputs: a scikit-learn classifier as skl2onnx writes it (a label and probabilities, as a
ZipMap or a ``[N, K]`` tensor) answers ``label`` and ``proba_<class>``; one float output is a
regressor's ``prediction``; any other graph answers every output under its own name.

The bytes are parsed and checked by ``onnx`` (protobuf and its checker) before onnxruntime's
native parser sees them; a graph that refers to files outside itself (external data), or
holds a tree whose links loop, is refused (:mod:`._onnx_check`). A session runs on one
thread: the micro-batcher gives throughput, and onnxruntime's parallel kernels (a tree
ensemble's, for one) sum in an order that depends on the batch, so a row's answer would
depend on the rows it shares a call with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from serving.errors import InvalidName, MissingRuntime, UntrustedArtifact
from serving.runtimes import Description, Flavor, Trust

try:
    import onnx

    from serving.runtimes._onnx_check import first_line, parse, rowwise
    from serving.runtimes._onnx_graph import Graph, Port, signature
except ImportError:  # onnxruntime alone: the extra was not installed whole
    raise MissingRuntime("onnx", "onnx", "onnx") from None

if TYPE_CHECKING:
    from serving.metadata import Feature, Method, ModelVersion, Task

PACKAGES = ("onnxruntime", "onnx")


def dump(native: Any, flavor: Flavor) -> bytes:
    """A ``ModelProto``'s bytes, or serialized bytes as they are (checked either way)."""
    data = bytes(native) if isinstance(native, bytes | bytearray) else native.SerializeToString()
    parse(data, "the ONNX model")
    return data


def untrusted_types(data: bytes, flavor: Flavor) -> list[str]:
    return []  # a graph of operators: nothing in it runs but onnxruntime's own kernels


@dataclass(frozen=True)
class Loaded:
    """A checked graph and the session that runs it."""

    proto: onnx.ModelProto
    session: ort.InferenceSession
    threads: int = 1


def load(data: bytes, flavor: Flavor, trust: Trust, what: str) -> Loaded:
    """The graph in ``data``, refused unless it parses and checks as a self-contained model
    and onnxruntime makes a session of it."""
    proto = parse(data, what)
    return Loaded(proto, _session(proto, what))


def describe(native: Any, method: Method | None) -> Description:
    loaded = _loaded(native, "the ONNX model")
    graph = signature(loaded.session, loaded.proto)
    features: dict[str, Any] = {
        "features": [] if graph.matrix else [p.name for p in graph.inputs],
        "count": graph.width,
        "feature_types": graph.feature_types,
        "row_block": 1 if rowwise(loaded.proto) else 8,
    }
    if graph.classes is not None:
        if method not in (None, "predict_proba", "predict"):
            raise InvalidName("method", str(method), "an ONNX classifier answers predict_proba")
        outputs = ["label", *(f"proba_{c}" for c in graph.classes)]
        return Description(
            "classifier",
            method or "predict_proba",
            outputs if method != "predict" else ["label"],
            graph.classes,
            output_types={"label": graph.outputs[0].arrow or "double"},
            **features,
        )
    task: Task = "regressor" if graph.regressor else "transformer"
    default: Method = "predict" if graph.regressor else "transform"
    if method not in (None, default):
        raise InvalidName("method", str(method), f"this ONNX graph answers {default}")
    return Description(
        task,
        default,
        graph.columns,
        output_types={c: t for c, t in graph.column_types.items() if t != "double"},
        **features,
    )


class OnnxModel:
    """An onnxruntime session behind the seam: it answers with named columns."""

    table = False
    column_major = False  # onnxruntime takes row-major tensors

    def __init__(self, loaded: Loaded, version: ModelVersion):
        self.native = loaded.session
        self._graph = signature(loaded.session, loaded.proto)
        _check_schema(self._graph, version.inputs)
        # int64 features come as a DataFrame, whose columns keep their type (the matrix
        # the predictor builds of mixed or nullable columns is float64: 2**53 + 1 rounds).
        self.frame = any(p.dtype is np.int64 for p in self._graph.inputs)
        self.float32 = any(p.dtype is np.float32 for p in self._graph.inputs)
        self.classes = None if version.classes is None else np.asarray(version.classes)
        self._names = [p.name for p in self._graph.outputs]

    def scores(self, x: Any) -> dict[str, np.ndarray]:
        """Every output as named columns: the session's results for the batch ``x``."""
        feeds, rows, batch = _feeds(self._graph, x), len(x), self._graph.batch
        if batch is None:
            return self._graph.answer(self.native.run(self._names, feeds), rows)
        runs = [
            self.native.run(self._names, _chunk(feeds, at, batch)) for at in range(0, rows, batch)
        ]
        return self._graph.answer(_joined(runs), rows)

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        """The graph's own label (the predictor takes it from :meth:`scores` already)."""
        return self.scores(x)["label"]


def wrap(native: Any, version: ModelVersion, threads: int = 1) -> OnnxModel:
    return OnnxModel(_loaded(native, version.ref, threads), version)


# -- the session ------------------------------------------------------------------------


def _loaded(native: Any, what: str, threads: int = 1) -> Loaded:
    """What :func:`load` returns, from it or from a registered object (a ``ModelProto``, or
    its bytes, which :func:`dump` has checked), whose session runs on ``threads`` threads."""
    if isinstance(native, Loaded):
        if native.threads == threads:
            return native
        native = native.proto
    proto = parse(bytes(native), what) if isinstance(native, bytes | bytearray) else native
    return Loaded(proto, _session(proto, what, threads), threads)


def _session(proto: onnx.ModelProto, what: str, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread unless the operator sets more: a tree ensemble on several threads sums its
    # trees in an order that depends on the batch's size (a row's last bit with it).
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4  # its errors are raised (as ours), not printed
    try:
        return ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime's errors derive from Exception alone
        reason = first_line(err).rsplit(" : ", 1)[-1]
        raise UntrustedArtifact(what, f"onnxruntime cannot load it: {reason}") from None


# -- inputs -----------------------------------------------------------------------------


def _check_schema(graph: Graph, inputs: list[Feature]) -> None:
    """Refuse a schema the graph's inputs cannot take (text for numbers, a fraction for an
    int64, a null no int64 or string tensor holds), when registered rather than at a call."""
    ports = [graph.inputs[0]] * len(inputs) if graph.matrix else graph.inputs
    if len(ports) != len(inputs) or graph.width not in (None, len(inputs)):
        names = ", ".join(f.name for f in inputs)
        reason = f"the graph takes {graph.width} features, the schema names {len(inputs)}"
        raise InvalidName("input schema", names, reason)
    for port, feature in zip(ports, inputs, strict=True):
        kind = str(feature.type)
        fits = {"string": _is_text(kind), "int64": _is_int(kind)}.get(
            port.column, _is_int(kind) or _is_float(kind)
        )
        if not fits or (feature.nullable and port.column != "double"):
            got = f"{kind}{' with nulls' if feature.nullable else ''}"
            reason = f"the graph's input {port.name!r} takes {port.type}, not {got}"
            raise InvalidName("input schema", feature.name, reason)


def _is_text(kind: str) -> bool:
    return kind in ("string", "large_string")


def _is_int(kind: str) -> bool:
    return kind.startswith(("int", "uint"))


def _is_float(kind: str) -> bool:
    return kind in ("float", "double", "halffloat")


def _feeds(graph: Graph, x: Any) -> dict[str, np.ndarray]:
    """The session's inputs from the predictor's batch (a matrix, or a DataFrame, whose
    columns are the features in the schema's order), each in its tensor's type and shape."""
    if graph.matrix:
        port = graph.inputs[0]
        return {port.name: _typed(np.asarray(x), port)}
    columns = _columns(x)
    return {
        port.name: _typed(columns[j], port).reshape((-1, 1) if port.rank == 2 else (-1,))
        for j, port in enumerate(graph.inputs)
    }


def _columns(x: Any) -> list[np.ndarray]:
    if isinstance(x, np.ndarray):
        return [x[:, j] for j in range(x.shape[1])]
    return [x.iloc[:, j].to_numpy() for j in range(x.shape[1])]  # a DataFrame


def _typed(values: np.ndarray, port: Port) -> np.ndarray:
    if port.dtype is object:
        return values.astype(object, copy=False)
    return np.ascontiguousarray(values, dtype=port.dtype)


def _chunk(feeds: dict[str, np.ndarray], start: int, size: int) -> dict[str, np.ndarray]:
    """Rows ``start..start+size`` of every input, the last row repeated to fill a short one,
    for a graph whose batch size is fixed."""
    out = {}
    for name, values in feeds.items():
        part = values[start : start + size]
        if len(part) < size:
            part = np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
        out[name] = part
    return out


def _joined(runs: list[list[Any]]) -> list[Any]:
    return [
        [row for run in runs for row in run[i]]
        if isinstance(runs[0][i], list)
        else np.concatenate([run[i] for run in runs])
        for i in range(len(runs[0]))
    ]
