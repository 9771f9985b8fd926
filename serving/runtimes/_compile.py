"""Compiling: a scikit-learn model registered as the ONNX graph skl2onnx makes of it.

``register(model, name, compile="onnx", input_example=rows)`` converts the model, then
scores the example's rows (the first :data:`MAX_ROWS`) with the model and with the graph,
each through its own :class:`~serving.predictor.Predictor`, and registers the graph only
when both answer the same columns of the same types, every label is equal and every
probability (or prediction) is within ``tolerance`` (absolute, :data:`TOLERANCE` unless
told). What was compiled and how closely it agreed is the version's ``compiled``
(:class:`~serving.metadata.Compilation`); from then on the version is an ``onnx`` one like
any other, so every mode answers with the graph's answer.

The graph's inputs keep the model's schema. A model that selects columns by name (a
``ColumnTransformer``, alone or first in a ``Pipeline``) takes one ``[N, 1]`` input per
feature, named after it: strings as strings, numbers as doubles; any other takes one
``[N, K]`` input ``X``. Numbers are doubles where skl2onnx's graph of the model loads
(a linear model then agrees to about 1e-16); else floats (a gradient boosting's, whose
double graph onnxruntime refuses). Tree ensembles compute in float32 either way, as
scikit-learn's trees do, and agree to about 1e-7.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from importlib.metadata import version as installed
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from serving import runtimes
from serving.errors import (
    CompiledDisagrees,
    MissingRuntime,
    NotCompilable,
    UntrustedArtifact,
)
from serving.metadata import Compilation, Feature

if TYPE_CHECKING:
    from serving.metadata import ModelVersion

Target = Literal["onnx"]
TOLERANCE = 1e-5
"""The default largest absolute difference between a model's and its graph's scores."""
MAX_ROWS = 10_000
"""Rows of the input example that both answer at registration."""
_NUMBERS: tuple[Literal["double", "float"], ...] = ("double", "float")


def compiled(
    native: Any,
    version: ModelVersion,
    example: pa.Table | None,
    target: Target = "onnx",
    tolerance: float | None = None,
    row_block: int | None = None,
    threads: int = 1,
) -> tuple[bytes, Any, ModelVersion]:
    """``(artifact, loaded graph, its version)`` for the scikit-learn ``native`` about to be
    registered as ``version``, refused (:class:`NotCompilable`, :class:`CompiledDisagrees`)
    unless the graph answers the example as the model does."""
    what = _type_name(native)
    tolerance = TOLERANCE if tolerance is None else tolerance
    if target != "onnx":
        raise NotCompilable(what, str(target), "the only target is onnx")
    if version.flavor not in ("sklearn-skops", "sklearn-pickle"):
        reason = f"only scikit-learn models compile (skl2onnx), not {version.flavor} ones"
        raise NotCompilable(what, target, reason)
    if example is None or example.num_rows == 0:
        reason = "it needs an input example, whose rows both must answer alike"
        raise NotCompilable(what, target, reason + " (--input-example)")
    if not (tolerance >= 0 and np.isfinite(tolerance)):
        raise NotCompilable(what, target, f"a tolerance is a finite number >= 0, not {tolerance:g}")
    if version.method not in ("predict", "predict_proba"):
        reason = f"its graph answers predict or predict_proba, not {version.method}"
        raise NotCompilable(what, target, reason)
    data, loaded, numbers = _converted(native, version.inputs, what)
    graph_version = _graph_version(version, data, loaded, row_block)
    rows = example.slice(0, MAX_ROWS)
    want = _answer(native, version, rows, threads)
    got = _answer(loaded, graph_version, rows, threads)
    if want.schema != got.schema:
        reason = f"the graph answers {_shown(got.schema)}, the model {_shown(want.schema)}"
        raise NotCompilable(what, target, reason)
    difference = _difference(want, got, tolerance)
    compilation = Compilation(
        source_flavor=version.flavor,
        source_type=what,
        source_sha256=version.sha256,
        converter="skl2onnx",
        converter_version=installed("skl2onnx"),
        numbers=numbers,
        rows_checked=rows.num_rows,
        tolerance=tolerance,
        max_difference=difference,
    )
    return data, loaded, graph_version.model_copy(update={"compiled": compilation})


def _graph_version(
    version: ModelVersion, data: bytes, loaded: Any, row_block: int | None
) -> ModelVersion:
    """``version`` as the graph's: what the ONNX runtime reads of it, the same schema."""
    onnx = runtimes.runtime("onnx")
    about = onnx.describe(loaded, version.method)
    return version.model_copy(
        update={
            "flavor": "onnx",
            "artifact": f"model.{runtimes.extension('onnx')}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "task": about.task,
            "method": about.method,
            "outputs": about.outputs,
            "output_types": about.output_types,
            "classes": about.classes,
            "row_block": about.row_block if row_block is None else row_block,
            "trusted_types": [],
            "trust_pickle": False,
            "libraries": runtimes.library_versions((*onnx.PACKAGES, "skl2onnx", "scikit-learn")),
        }
    )


# -- converting -------------------------------------------------------------------------


def _converted(
    native: Any, inputs: list[Feature], what: str
) -> tuple[bytes, Any, Literal["double", "float"]]:
    """The graph's bytes and its loaded session, numbers as doubles if that graph loads."""
    try:
        from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
    except ImportError as err:
        raise MissingRuntime("onnx", "skl2onnx", "onnx") from err
    onnx = runtimes.runtime("onnx")
    failures = []
    for numbers in _NUMBERS:
        try:
            data = onnx.dump(_graph(native, inputs, numbers, what), "onnx")
            return data, onnx.load(data, "onnx", runtimes.Trust(), what), numbers
        except (MissingConverter, MissingShapeCalculator):
            reason = f"skl2onnx has no converter for {_unconvertible(native) or 'a part of it'}"
            raise NotCompilable(what, "onnx", reason) from None
        except UntrustedArtifact as err:  # onnxruntime refused the graph it made
            failures.append(err.message.split(": ", 1)[-1])
        except NotCompilable:
            raise
        except Exception as err:  # skl2onnx's own errors derive from many classes
            failures.append(f"skl2onnx failed: {type(err).__name__}: {_first_line(err)}")
    raise NotCompilable(what, "onnx", failures[0])


def _graph(native: Any, inputs: list[Feature], numbers: str, what: str) -> Any:
    """skl2onnx's graph of ``native``, its inputs typed after the schema ``inputs``."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
    from sklearn.base import is_classifier

    number = DoubleTensorType if numbers == "double" else FloatTensorType
    kinds = {f.name: _kind(f, what) for f in inputs}
    if _takes_columns(native):
        types = [
            (name, StringTensorType([None, 1]) if kind == "string" else number([None, 1]))
            for name, kind in kinds.items()
        ]
    elif len(set(kinds.values())) == 1:
        tensor = StringTensorType if "string" in kinds.values() else number
        types = [("X", tensor([None, len(inputs)]))]
    else:
        reason = "it takes strings and numbers in one matrix: encode them in a ColumnTransformer"
        raise NotCompilable(what, "onnx", reason)
    options = {id(_final(native)): {"zipmap": False}} if is_classifier(native) else None
    return to_onnx(native, initial_types=types, options=options)


def _kind(feature: Feature, what: str) -> Literal["number", "string"]:
    kind = feature.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    reason = f"its feature {feature.name!r} is {kind}: a graph takes numbers and strings"
    raise NotCompilable(what, "onnx", reason)


def _takes_columns(model: Any) -> bool:
    """Whether the model selects its columns by name (a ColumnTransformer, maybe first in
    a Pipeline): its graph then takes one input per feature."""
    from sklearn.compose import ColumnTransformer

    while hasattr(model, "steps"):
        model = model.steps[0][1]
    return isinstance(model, ColumnTransformer)


def _final(model: Any) -> Any:
    while hasattr(model, "steps"):
        model = model.steps[-1][1]
    return model


def _parts(model: Any) -> Iterator[Any]:
    """The model and every estimator inside it (pipeline steps, column transformers')."""
    yield model
    for _, step in getattr(model, "steps", []):
        yield from _parts(step)
    for _, part, _ in getattr(model, "transformers_", []):
        if not isinstance(part, str):  # "drop", "passthrough"
            yield from _parts(part)
    for _, part in getattr(model, "transformer_list", []):
        yield from _parts(part)


def _unconvertible(model: Any) -> str | None:
    """The first estimator in ``model`` skl2onnx has no converter for, by its class."""
    try:
        from skl2onnx._supported_operators import sklearn_operator_name_map
    except ImportError:  # a private table: without it, the error names no class
        return None
    for part in _parts(model):
        if type(part) not in sklearn_operator_name_map:
            return _type_name(part)
    return None


# -- checking ---------------------------------------------------------------------------


def _answer(native: Any, version: ModelVersion, rows: pa.Table, threads: int) -> pa.Table:
    from serving.predictor import Predictor  # the predict path itself, as a client meets it

    model = runtimes.runtime(version.flavor).wrap(native, version, threads)
    return Predictor(version, model).predict(rows)


def _difference(want: pa.Table, got: pa.Table, tolerance: float) -> float:
    """The largest absolute difference of the float columns, refused (naming the row and
    both values) past ``tolerance``; any other column (a label) must be equal."""
    floats = [n for n, t in zip(want.column_names, want.schema.types, strict=True) if _float(t)]
    for name in want.column_names:
        if name not in floats and not want[name].equals(got[name]):
            a, b = want[name].to_pylist(), got[name].to_pylist()
            row = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            raise CompiledDisagrees(row, name, a[row], b[row], None)
    largest, worst = 0.0, None
    for name in floats:
        a, b = want[name].to_numpy(), got[name].to_numpy()
        with np.errstate(invalid="ignore"):
            gap = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        gap = np.where(np.isnan(gap), np.inf, gap)  # one NaN, the other a number
        row = int(gap.argmax())
        if gap[row] > largest:
            largest, worst = float(gap[row]), (row, name, float(a[row]), float(b[row]))
    if worst is not None and largest > tolerance:
        raise CompiledDisagrees(*worst, tolerance)
    return largest


def _float(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind)


def _shown(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in schema)


def _type_name(model: Any) -> str:
    cls = type(model)
    module = cls.__module__
    if module.startswith("sklearn."):  # its public path: sklearn.ensemble, not ._forest
        parts = module.split(".")
        module = ".".join(parts[: next(i for i, p in enumerate([*parts, "_"]) if p[0] == "_")])
    return f"{module}.{cls.__qualname__}"


def _first_line(err: BaseException) -> str:
    line = (str(err).strip().splitlines() or [""])[0]
    return line if len(line) <= 200 else line[:197] + "..."
