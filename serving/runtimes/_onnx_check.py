"""Bytes checked before onnxruntime's native code sees them: a ModelProto that ``onnx``'s
checker passes, holding all of its weights (no path to a file outside it), whose trees
end in leaves (onnxruntime walks a tree whose links loop for ever)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from serving.errors import UntrustedArtifact

NOT_ONNX = "it is not an ONNX model: "
_TREES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")
# Operators that make a row's answer of that row alone, the same in a batch of any size (the
# session runs on one thread: trees are summed in their order): a graph of them alone needs
# no row_block padding. Anything else (MatMul, Gemm, a LinearClassifier) may use kernels that
# depend on the batch's shape.
_ROWWISE = {*_TREES, "ZipMap", "Cast", "Identity", "Reshape", "Flatten", "ArrayFeatureExtractor"}


def parse(data: bytes, what: str) -> onnx.ModelProto:
    """The model in ``data``, refused (:class:`UntrustedArtifact`) unless it checks."""
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError):
        raise UntrustedArtifact(what, NOT_ONNX + "its bytes are no ONNX ModelProto") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(proto)):
        raise UntrustedArtifact(
            what,
            "it refers to external data files, which are not loaded: save the model with "
            "its weights inside (onnx.save_model(model, path, save_as_external_data=False))",
        )
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as err:
        raise UntrustedArtifact(what, NOT_ONNX + first_line(err)) from None
    for node in _nodes(proto):
        if node.op_type in _TREES and node.domain == "ai.onnx.ml" and _loops(node):
            reason = f"its {node.op_type} holds a tree whose links loop"
            raise UntrustedArtifact(what, NOT_ONNX + reason)
    return proto


def rowwise(proto: onnx.ModelProto) -> bool:
    """Whether every node of the graph answers each row of that row alone (see _ROWWISE)."""
    return all(node.op_type in _ROWWISE for node in _nodes(proto))


def first_line(err: BaseException) -> str:
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if len(line) <= 200 else line[:197] + "..."


def _nodes(proto: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node, in every subgraph and function (protobuf's nesting limit bounds the
    recursion)."""
    yield from _graph_nodes(proto.graph.node)
    for function in proto.functions:
        yield from _graph_nodes(function.node)


def _graph_nodes(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    for node in nodes:
        yield node
        for attribute in node.attribute:
            for graph in (attribute.g, *attribute.graphs):
                yield from _graph_nodes(graph.node)


def _tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model holds: initializers and node attributes, everywhere."""
    graphs = [proto.graph]
    for node in _nodes(proto):
        for attribute in node.attribute:
            yield attribute.t
            yield from attribute.tensors
            for sparse in (attribute.sparse_tensor, *attribute.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            graphs += [attribute.g, *attribute.graphs]
    for graph in graphs:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)


def _loops(node: onnx.NodeProto) -> bool:
    """Whether a tree ensemble's links hold a cycle (anywhere: no walk can then loop)."""
    a: dict[str, Any] = {attribute.name: attribute for attribute in node.attribute}
    yes, no = _ints(a, "nodes_truenodeids"), _ints(a, "nodes_falsenodeids")
    if "tree_roots" in a:  # TreeEnsemble (ai.onnx.ml 5): links are indices, leaves apart
        yes_leaf, no_leaf = _ints(a, "nodes_trueleafs"), _ints(a, "nodes_falseleafs")
        links = [
            (i, child)
            for links, leaves in ((yes, yes_leaf), (no, no_leaf))
            for i, (child, leaf) in enumerate(zip(links, leaves, strict=False))
            if not leaf
        ]
        return _cyclic(len(yes), links)
    trees, ids = _ints(a, "nodes_treeids"), _ints(a, "nodes_nodeids")
    modes = list(a["nodes_modes"].strings) if "nodes_modes" in a else []
    index = {key: i for i, key in enumerate(zip(trees, ids, strict=False))}
    links = [
        (i, index[(tree, child)])
        for i, (tree, mode) in enumerate(zip(trees, modes, strict=False))
        if mode != b"LEAF"
        for child in (yes[i : i + 1] + no[i : i + 1])
        if (tree, child) in index
    ]
    return _cyclic(len(trees), links)


def _ints(attributes: dict[str, Any], name: str) -> list[int]:
    return list(attributes[name].ints) if name in attributes else []


def _cyclic(count: int, links: list[tuple[int, int]]) -> bool:
    """Whether the graph of ``count`` nodes and these links has a cycle (Kahn's algorithm:
    nodes no link enters are taken away until none is left, or only cycles are)."""
    entering = [0] * count
    children: list[list[int]] = [[] for _ in range(count)]
    for parent, child in links:
        if not (0 <= parent < count and 0 <= child < count):
            continue  # a link to nowhere: onnxruntime refuses it itself
        entering[child] += 1
        children[parent].append(child)
    free = deque(i for i in range(count) if entering[i] == 0)
    taken = 0
    while free:
        taken += 1
        for child in children[free.popleft()]:
            entering[child] -= 1
            if entering[child] == 0:
                free.append(child)
    return taken < count
