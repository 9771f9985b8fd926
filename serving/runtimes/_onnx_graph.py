"""What an ONNX graph takes and answers, read from its session and its nodes, and how its
raw outputs become named columns."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from serving.errors import InvalidName

# Tensor element types a feature may have: (numpy dtype, Arrow type of its column).
_INPUTS: dict[str, tuple[Any, str]] = {
    "tensor(float)": (np.float32, "double"),  # checked in float64, refused beyond float32
    "tensor(double)": (np.float64, "double"),
    "tensor(int64)": (np.int64, "int64"),
    "tensor(string)": (object, "string"),
}
# Output element types and their columns' Arrow types (floats widen to float64, exactly).
_OUTPUTS = {
    "tensor(float)": "double",
    "tensor(double)": "double",
    "tensor(float16)": "double",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}
_MAX_WIDTH = 1 << 16
"""Columns one input or output may stand for: a graph is read before anything else of it."""
_MAX_BATCH = 1 << 12
"""Rows of a graph that fixes its batch size (every call is padded to it)."""
_LABELS = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


@dataclass(frozen=True)
class Port:
    """One graph input or output."""

    name: str
    type: str
    """onnxruntime's spelling: ``tensor(float)``, ``seq(map(int64,tensor(float)))``..."""
    shape: tuple[int | None, ...]
    """Its dimensions, ``None`` where the graph leaves one free."""

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> Any:
        return _INPUTS[self.type][0]

    @property
    def column(self) -> str:
        """The Arrow type of an input's feature column."""
        return _INPUTS[self.type][1]

    @property
    def arrow(self) -> str | None:
        """The Arrow type of an output's answer column; ``None`` when it is none."""
        return _OUTPUTS.get(self.type)

    @property
    def width(self) -> int | None:
        """Columns of a ``[N, K]`` tensor (1 for ``[N]``), ``None`` when free or no matrix."""
        return 1 if self.rank == 1 else self.shape[1] if self.rank == 2 else None


@dataclass(frozen=True)
class Graph:
    """A graph's signature, as :func:`signature` reads it."""

    inputs: list[Port]
    outputs: list[Port]
    matrix: bool
    """One ``[N, K]`` input holding every feature (else one input per feature)."""
    classes: list[Any] | None
    """A classifier's class labels, in the order of its probabilities."""

    @property
    def width(self) -> int | None:
        return self.inputs[0].width if self.matrix else len(self.inputs)

    @property
    def batch(self) -> int | None:
        """The rows of every call, when the graph fixes them (an export without a dynamic
        batch axis); ``None`` when free."""
        return self.inputs[0].shape[0]

    @property
    def feature_types(self) -> dict[str, str]:
        """The Arrow types of the features that are not float64, when no example says."""
        if self.matrix:
            names = [f"f{i}" for i in range(self.width or 0)]
            ports = [self.inputs[0]] * len(names)
        else:
            names, ports = [p.name for p in self.inputs], self.inputs
        return {n: p.column for n, p in zip(names, ports, strict=True) if p.column != "double"}

    @property
    def regressor(self) -> bool:
        return len(self.outputs) == 1 and self.outputs[0].type in (
            "tensor(float)",
            "tensor(double)",
        )

    @property
    def columns(self) -> list[str]:
        return list(self.column_types)

    @property
    def column_types(self) -> dict[str, str]:
        """The answer's columns (a classifier's aside) and their Arrow types."""
        if self.regressor:
            width = self.outputs[0].width or 1
            names = ["prediction"] if width == 1 else [f"prediction_{i}" for i in range(width)]
            return dict.fromkeys(names, "double")
        columns: dict[str, str] = {}
        for port in self.outputs:
            width = port.width or 0
            names = [port.name] if width == 1 else [f"{port.name}_{i}" for i in range(width)]
            columns |= dict.fromkeys(names, port.arrow or "double")
        return columns

    def answer(self, results: list[Any], rows: int) -> dict[str, np.ndarray]:
        """The named columns of a session's results (every output, in graph order)."""
        if self.classes is not None:
            return self._classified(results, rows)
        if self.regressor:
            matrix = _matrix(results[0], rows, self.outputs[0])
            return dict(zip(self.columns, matrix.T, strict=True))
        columns: dict[str, np.ndarray] = {}
        for port, values in zip(self.outputs, results, strict=True):
            matrix = _matrix(values, rows, port)
            names = (
                [port.name]
                if port.width == 1
                else [f"{port.name}_{j}" for j in range(len(matrix.T))]
            )
            columns |= zip(names, matrix.T, strict=True)
        return columns

    def _classified(self, results: list[Any], rows: int) -> dict[str, np.ndarray]:
        assert self.classes is not None
        label, probabilities = results
        if isinstance(probabilities, list):  # a ZipMap: one {class: probability} per row
            probabilities = np.array(
                [[row[c] for c in self.classes] for row in probabilities[:rows]], np.float64
            )
        width = len(self.classes)
        matrix = _matrix(probabilities, rows, replace(self.outputs[1], shape=(None, width)))
        columns = {"label": _matrix(label, rows, self.outputs[0])[:, 0]}
        return columns | {f"proba_{c}": matrix[:, j] for j, c in enumerate(self.classes)}


def signature(session: ort.InferenceSession, proto: onnx.ModelProto) -> Graph:
    """What the graph takes and answers, refused (:class:`InvalidName`) when it is no table
    of features in, columns out."""
    inputs = [_port(arg) for arg in session.get_inputs()]
    outputs = [_port(arg) for arg in session.get_outputs()]
    if not inputs:
        raise InvalidName("ONNX graph", "", "it takes no input")
    for port in inputs:
        if port.type not in _INPUTS:
            raise InvalidName("ONNX input", port.name, f"{port.type} is not a table column")
    matrix = len(inputs) == 1 and inputs[0].rank == 2
    if not matrix and not all(p.rank == 1 or p.shape[1:] == (1,) for p in inputs):
        shapes = ", ".join(f"{p.name} {list(p.shape)}" for p in inputs)
        raise InvalidName(
            "ONNX inputs", shapes, "expected one [N, K] tensor or one [N, 1] tensor per feature"
        )
    batches = {p.shape[0] for p in inputs}
    fixed = batches.pop() if len(batches) == 1 else 0
    if fixed is not None and not 0 < fixed <= _MAX_BATCH:
        shapes = ", ".join(f"{p.name} {list(p.shape)}" for p in inputs)
        reason = f"expected a free batch size, or one fixed for every input to 1..{_MAX_BATCH}"
        raise InvalidName("ONNX inputs", shapes, reason)
    for port in (*inputs, *outputs):
        if (port.width or 0) > _MAX_WIDTH:
            shown = f"{port.name} {list(port.shape)}"
            raise InvalidName("ONNX tensor", shown, f"more than {_MAX_WIDTH} columns")
    classes = _classes(outputs, proto)
    graph = Graph(inputs, outputs, matrix, classes)
    if classes is None:
        for port in outputs:
            if port.arrow is None or port.rank not in (1, 2) or port.width is None:
                shown = f"{port.name} {port.type} {list(port.shape)}"
                reason = "expected tensors of [N] or [N, K] numbers or strings (K fixed)"
                raise InvalidName("ONNX output", shown, reason)
    return graph


def _port(arg: Any) -> Port:
    return Port(arg.name, arg.type, tuple(d if isinstance(d, int) else None for d in arg.shape))


def _classes(outputs: list[Port], proto: onnx.ModelProto) -> list[Any] | None:
    """The class labels of a classifier (a label and its probabilities, as skl2onnx writes
    one): from its ZipMap, else from the node that classifies; ``None`` for other graphs."""
    if len(outputs) != 2:
        return None
    label, probabilities = outputs
    if label.type not in ("tensor(int64)", "tensor(string)") or label.rank != 1:
        return None
    zipmap = probabilities.type.startswith("seq(map(")
    floats = probabilities.type in ("tensor(float)", "tensor(double)")
    if not zipmap and (not floats or probabilities.rank != 2):
        return None
    classes = _class_labels(proto) or _looked_up_labels(proto, label.name)
    if classes is None or (not zipmap and probabilities.width not in (None, len(classes))):
        return None
    text = label.type == "tensor(string)"
    if any(isinstance(c, str) != text for c in classes) or len(set(classes)) < len(classes):
        return None
    return classes


def _class_labels(proto: onnx.ModelProto) -> list[Any] | None:
    """The labels a ZipMap or a classifier node (``LinearClassifier``, ``TreeEnsemble...``)
    holds as an attribute."""
    nodes = sorted(proto.graph.node, key=lambda node: node.op_type != "ZipMap")
    for node in nodes:
        for attribute in node.attribute:
            if attribute.name in _LABELS and (attribute.ints or attribute.strings):
                if attribute.strings:
                    return [s.decode("utf-8", "replace") for s in attribute.strings]
                return list(attribute.ints)
    return None


def _looked_up_labels(proto: onnx.ModelProto, label: str) -> list[Any] | None:
    """The labels a graph looks its label up in (skl2onnx's float64 classifiers, its neural
    networks): a constant that an ``ArrayFeatureExtractor`` indexes with the ``ArgMax`` of
    the scores, the label being that lookup, cast or reshaped."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    constants = {tensor.name: tensor for tensor in proto.graph.initializer}
    node = producers.get(label)
    while node is not None and node.op_type in ("Cast", "Reshape", "Identity", "Flatten"):
        node = producers.get(node.input[0]) if node.input else None
    if node is None or node.op_type != "ArrayFeatureExtractor" or node.input[0] not in constants:
        return None
    values = numpy_helper.to_array(constants[node.input[0]])
    if values.ndim != 1 or values.dtype.kind not in "iO":
        return None
    return [
        v.decode("utf-8", "replace")
        if isinstance(v, bytes)
        else v
        if isinstance(v, str)
        else int(v)
        for v in values
    ]


def _matrix(values: Any, rows: int, port: Port) -> np.ndarray:
    """An output as ``[rows, K]``, floats widened to float64 (exactly: widening loses
    nothing); a graph answering another shape than it declares fails."""
    array = np.asarray(values)
    width = array.shape[1] if array.ndim == 2 else 1 if array.ndim == 1 else None
    if width is None or len(array) < rows or width != port.width:
        shape = list(array.shape)
        raise ValueError(f"output {port.name!r} has shape {shape}, expected [{rows}, {port.width}]")
    matrix = array[:rows].reshape(rows, width)
    return matrix.astype(np.float64) if matrix.dtype.kind == "f" else matrix
