"""The runtime seam: what stands between the predictor's checks and a model's own library.

One module here per runtime (``sklearn``, ``xgboost``, ...), each a :class:`Runtime`: it
turns a model into artifact bytes and back (loading only what was verified and trusted),
says what the model is (:class:`Description`: task, outputs, features), and wraps a loaded
model in a :class:`Model`, the one object the predictor calls. The predictor keeps the
schema checks, micro-batching, ``row_block`` padding and output splitting for every runtime.

A runtime's library is imported only when one of its models is registered or loaded: a
missing library is a :class:`~serving.errors.MissingRuntime` naming the extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, cast, get_args

import numpy as np

from serving.errors import MissingRuntime, UntrustedArtifact

if TYPE_CHECKING:
    from serving.metadata import Method, ModelVersion, Task

Flavor = Literal["sklearn-skops", "sklearn-pickle", "xgboost", "lightgbm", "onnx", "python"]
FLAVORS: tuple[Flavor, ...] = get_args(Flavor)


@dataclass(frozen=True)
class _Spec:
    module: str
    """The runtime module, ``serving.runtimes.<module>``."""
    extension: str
    """The artifact's file extension in the store (``model.<extension>``)."""
    package: str | None = None
    """The library it imports, when that is an extra; ``None`` for the core's own."""
    native: bool = False
    """Its artifacts are parsed by native code, which has crashed on hostile bytes: a file
    is first read in a child process (:func:`probe`)."""


_SPECS: dict[Flavor, _Spec] = {
    "sklearn-skops": _Spec("sklearn", "skops"),
    "sklearn-pickle": _Spec("sklearn", "joblib"),
    "xgboost": _Spec("xgboost", "ubj", "xgboost", native=True),
    "lightgbm": _Spec("lightgbm", "txt", "lightgbm", native=True),
    "onnx": _Spec("onnx", "onnx", "onnxruntime", native=True),
    "python": _Spec("python", "tar"),
}


class Trust(NamedTuple):
    """What the registering user explicitly trusted: the types a skops artifact may hold,
    a pickle (it runs code when loaded), a folder of Python code (the same)."""

    types: tuple[str, ...] = ()
    pickle: bool = False
    code: bool = False


@dataclass(frozen=True)
class Description:
    """What registration learns from a model and records in its version."""

    task: Task
    method: Method
    outputs: list[str]
    classes: list[Any] | None = None
    features: list[str] = field(default_factory=list)
    """The features' names in the order the model takes them; empty when it does not say."""
    count: int | None = None
    """How many features the model takes, when it says."""
    feature_types: dict[str, str] = field(default_factory=dict)
    """Arrow types of features that are not float64 (an XGBoost categorical's string)."""
    content_types: dict[str, str] = field(default_factory=dict)
    """Media types of binary or string features (``image/*``)."""
    paths: list[str] = field(default_factory=list)
    """Binary features the model reads as files, from their paths (``Feature.path``)."""
    output_content_types: dict[str, str] = field(default_factory=dict)
    """Media types of binary outputs (``image/png``)."""
    shapes: dict[str, list[int]] = field(default_factory=dict)
    """Tensor features' shapes per row (``Feature.shape``); their types are fixed-size lists."""
    output_shapes: dict[str, list[int]] = field(default_factory=dict)
    """Tensor outputs' shapes per row (``ModelVersion.output_shapes``)."""
    categories: dict[str, list[Any]] = field(default_factory=dict)
    """Categorical features' categories, as the model was trained with."""
    output_types: dict[str, str] = field(default_factory=dict)
    """Arrow types of outputs that are not float64 scores (a ``label`` takes its classes'
    type): string or int labels, a fixed-size list such as an embedding..."""
    files: dict[str, str] = field(default_factory=dict)
    """A folder artifact's files and their sha256, checked again on every load."""
    requirements: list[str] = field(default_factory=list)
    """Packages the model needs beyond its runtime's own."""
    row_block: int = 8
    """Model calls are padded to a multiple of this many rows (``ModelVersion.row_block``):
    1 where a row's answer cannot depend on the rows it shares a call with (a tree walks
    each row alone), 8 where it may (BLAS takes other kernels for other batch shapes)."""


class Model(Protocol):
    """A loaded model as the predictor calls it."""

    native: Any
    """The library's own object (an estimator, a Booster)."""
    frame: bool
    """Called with a pandas DataFrame of the named features, not a matrix."""
    table: bool
    """Called with the checked ``pyarrow.Table`` of the features itself."""
    float32: bool
    """Computes in float32: a finite float64 beyond its range is refused, not rounded."""
    column_major: bool
    """Reads a column-major (Fortran-ordered) matrix as it is, with the same answers: a
    large batch's matrix, built column by column, is then not transposed into row order
    (which was most of the predict path's own time at 100,000 rows)."""
    classes: np.ndarray | None
    """A classifier's classes, in the order of its score columns."""

    def scores(self, x: Any) -> Any:
        """The version's method (``predict_proba``, ``predict``...) on a padded batch: an
        array whose columns are the outputs (after ``label``, for classifiers), or a
        ``pyarrow.Table`` (or a mapping of arrays) holding every output by name, which the
        predictor casts to the recorded output types."""
        ...

    def labels(self, x: Any, scores: np.ndarray) -> np.ndarray:
        """A classifier's label for each row of ``x``, given its ``scores``."""
        ...


class Runtime(Protocol):
    """What a runtime module provides."""

    PACKAGES: tuple[str, ...]
    """Distributions whose versions a registered version records."""

    def dump(self, native: Any, flavor: Flavor) -> bytes: ...

    def pack(self, folder: Path) -> bytes:
        """A folder artifact's bytes (only runtimes whose models are folders have it)."""
        ...

    def load(self, data: bytes, flavor: Flavor, trust: Trust, what: str) -> Any:
        """The model in ``data``, refused (:class:`UntrustedArtifact`) unless trusted."""
        ...

    def untrusted_types(self, data: bytes, flavor: Flavor) -> list[str]:
        """What loading ``data`` needs trusted, recorded so that later loads trust it."""
        ...

    def describe(self, native: Any, method: Method | None) -> Description: ...

    def wrap(self, native: Any, version: ModelVersion, threads: int = 1) -> Model:
        """The loaded model as the predictor calls it. ``threads``: the most threads one
        call may use (``RegistrySettings.model_threads``), for runtimes whose library
        takes a count (XGBoost, LightGBM, onnxruntime)."""
        ...


def runtime(flavor: Flavor) -> Runtime:
    """The runtime module of ``flavor``, its library imported."""
    spec = _SPECS[flavor]
    try:
        module: ModuleType = importlib.import_module(f"serving.runtimes.{spec.module}")
    except ImportError as err:
        if spec.package is None or err.name != spec.package:
            raise
        raise MissingRuntime(flavor, spec.package, spec.module) from None
    return cast(Runtime, module)


_PROBE = """
import sys
from serving import runtimes
from serving.errors import MMServeError
runtime = runtimes.runtime(sys.argv[1])
try:
    runtime.describe(runtime.load(sys.stdin.buffer.read(), sys.argv[1], runtimes.Trust(), ""), None)
except MMServeError as err:
    print(err.message.removeprefix("refusing to load : "), file=sys.stderr)
    sys.exit(3)
except Exception as err:
    reason = f"it is not a valid {sys.argv[1]} model: {type(err).__name__}: {err}"
    print(reason[:300], file=sys.stderr)
    sys.exit(3)
"""


def probe(flavor: Flavor, data: bytes, what: str, timeout_s: float = 120) -> None:
    """Read (and describe) ``data`` in a child process first when ``flavor``'s parser is
    native code, so that bytes which crash it (a hand-edited or corrupted file) are refused,
    not fatal. Bytes the child refuses are refused without reading them here: a parser that
    fails half-way may have corrupted its process's memory, and crash it later."""
    if not _SPECS[flavor].native:
        return
    import subprocess
    import sys

    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, flavor],
            input=data,
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise UntrustedArtifact(what, f"reading it took over {timeout_s:g} s") from None
    if child.returncode == 0:
        return
    if child.returncode < 0:
        reason = f"it is not a valid {flavor} model: the library crashed reading it "
        reason += f"(signal {-child.returncode})"
    else:
        lines = child.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"reading it failed (exit code {child.returncode})"
    raise UntrustedArtifact(what, reason)


def extension(flavor: Flavor) -> str:
    return _SPECS[flavor].extension


def flavor_of(model: Any) -> Flavor:
    """The flavor of a model object, by the library its class comes from (scikit-learn and
    anything else: skops, whose loading refuses types nobody trusted)."""
    if isinstance(model, bytes | bytearray):
        return "onnx"  # a serialized ModelProto: the only model that is plain bytes
    for cls in type(model).__mro__:
        library = cls.__module__.split(".")[0]
        if library in ("xgboost", "lightgbm", "onnx"):
            return cast(Flavor, library)
    if callable(getattr(model, "predict", None)) and callable(getattr(model, "load", None)):
        return "python"  # an instance of a user's own model class
    return "sklearn-skops"


_SUFFIXES: dict[str, Flavor] = {
    ".skops": "sklearn-skops",
    ".joblib": "sklearn-pickle",
    ".pkl": "sklearn-pickle",
    ".pickle": "sklearn-pickle",
    ".ubj": "xgboost",
    ".onnx": "onnx",
}


def flavor_of_file(path: Path, data: bytes) -> Flavor:
    """The flavor of an artifact file, by its name and, where a name is shared by several
    formats (``.json``, ``.txt``), its content; a folder holds Python code. Refused, naming
    the choices, when neither tells."""
    if path.is_dir():
        return "python"
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix == ".json" and b'"learner"' in data[:4096]:
        return "xgboost"
    if suffix in (".txt", ".lgb", ".model") and data.startswith(b"tree\nversion="):
        return "lightgbm"
    raise UntrustedArtifact(
        path.name,
        "its flavor cannot be told from its name or content: name it with --flavor "
        f"(one of {', '.join(FLAVORS)})",
    )


def library_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The versions of mmserve's own stack and of ``packages`` (distributions), as
    installed; a version records them to say what it was registered with."""
    import platform

    import serving

    versions = {"python": platform.python_version(), "mmserve": serving.__version__}
    for package in ("numpy", "pyarrow", *packages):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def argmax_labels(classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each row's class of largest score (the first, on a tie; NaN counts as largest)."""
    return classes.take(_argmax_rows(scores))


def _argmax_rows(raw: np.ndarray) -> np.ndarray:
    """``raw.argmax(axis=1)``, a column at a time: numpy's argmax along a short axis makes
    one call per row, which on large batches cost as much as the model itself."""
    if raw.ndim != 2 or raw.shape[1] > 8 or len(raw) < 1024 or raw.dtype.kind != "f":
        return raw.argmax(axis=1)
    best, index = raw[:, 0], np.zeros(len(raw), np.intp)
    for j in range(1, raw.shape[1]):
        column = raw[:, j]
        np.maximum(index, (column > best) * j, out=index)  # j only grows: first maximum wins
        best = np.maximum(best, column)  # NaN propagates, so a NaN anywhere shows here
    if np.isnan(best).any():
        return raw.argmax(axis=1)  # argmax's own rule: the first NaN counts as the maximum
    return index
