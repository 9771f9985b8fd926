"""An MLflow model's flavor, turned into what mmserve registers for it.

The first flavor of :data:`FLAVORS` the model has is taken (or the one asked for):

- ``sklearn``: a skops file is registered as it is (its types trusted as any skops file's:
  by skops' defaults and ``--trust-type``). A pickle or cloudpickle file runs code when
  loaded, so it is read only with ``--trust-pickle``: then unpickled (its sha256 recorded),
  and registered as skops when skops writes it and reads it back, else as that same pickle.
- ``xgboost``: its UBJSON or JSON file, natively. ``lightgbm``: a Booster's text file
  natively; a scikit-learn wrapper (skops, or a pickle with ``--trust-pickle``) as its
  booster's text. ``onnx``: the graph, its external data (MLflow's default) taken inside.
- ``python_function``: the model's own code, through the ``python`` runtime and only with
  ``--trust-code`` (see :mod:`serving.imports._pyfunc`).

A native flavor's signature types its features (the model itself names and orders them);
a pyfunc's signature is its whole schema, inputs and outputs.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import ImportRefused, MissingRuntime, UntrustedArtifact
from serving.imports import _pyfunc
from serving.imports._mlmodel import MLmodel, columns
from serving.runtimes import Flavor, Trust

FLAVORS = ("sklearn", "xgboost", "lightgbm", "onnx", "python_function")
_XGBOOST_FORMATS = ("ubj", "json")


@dataclass(frozen=True)
class Artifact:
    """What to register for an MLflow model, and how."""

    model: Any
    """A file or folder to register, or a model object."""
    flavor: Flavor
    trust: Trust = field(default_factory=Trust)
    schema: dict[str, str] | None = None
    nullable: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def artifact(
    mlmodel: MLmodel, folder: Path, work: Path, source: str, trust: Trust, choice: str | None
) -> Artifact:
    """What to register for the model in ``folder`` (``work``: a folder for new files)."""
    found = list(mlmodel.flavors)
    if choice is not None and choice not in found:
        raise ImportRefused(source, f"it has no {choice} flavor; its flavors: {', '.join(found)}")
    taken = choice or next((f for f in FLAVORS if f in found), None)
    if taken not in FLAVORS:
        raise ImportRefused(
            source,
            f"its flavors are {', '.join(found)}; mmserve imports {', '.join(FLAVORS)}",
        )
    conf = mlmodel.flavors[taken]
    if taken == "python_function":
        if not trust.code:
            raise UntrustedArtifact(
                _what(source),
                f"its python_function flavor (loader {conf.get('loader_module')}) is Python "
                "code, which runs when loaded; import it with --trust-code (trust_code=True) "
                "only if you trust its author",
            )
        made = _pyfunc.folder(mlmodel, folder, work / "pyfunc", source)
        return Artifact(made, "python", Trust(code=True), tags={"mlflow.flavor": taken})
    made_by = {"sklearn": _sklearn, "xgboost": _xgboost, "lightgbm": _lightgbm, "onnx": _onnx}
    chosen = made_by[taken](conf, folder, work, source, trust)
    schema, nullable = _schema(mlmodel, source)
    tags = {"mlflow.flavor": taken, **chosen.tags}
    return Artifact(chosen.model, chosen.flavor, chosen.trust, schema, nullable, tags)


def _schema(mlmodel: MLmodel, source: str) -> tuple[dict[str, str] | None, list[str]]:
    """A native model's feature types, from a signature naming its columns; ``None`` when
    it names none (the model then names them, as registered directly)."""
    if mlmodel.inputs is None or not all(spec.get("name") for spec in mlmodel.inputs):
        return None, []  # no names (MLflow's [any] when it could not infer one): no types
    found = columns(mlmodel.inputs, "input", source)
    if found.shapes:
        name, shape = next(iter(found.shapes.items()))
        reason = f"its input tensor {name!r} has a shape per row ({shape}); a table model's "
        raise ImportRefused(source, reason + "features are one value a row")
    return found.schema(), found.nullable


def _sklearn(conf: dict[str, Any], folder: Path, work: Path, source: str, trust: Trust) -> Artifact:
    path = _file(folder, conf.get("pickled_model"), source)
    _no_code(conf, "sklearn", source)
    fmt = conf.get("serialization_format", "cloudpickle")
    if fmt == "skops":  # refused here, naming the model, when its types are not trusted
        from serving.runtimes import sklearn

        sklearn.check_trusted(_what(source), path.read_bytes(), "sklearn-skops", trust)
        return Artifact(path, "sklearn-skops", Trust(types=trust.types))
    data, sha256 = _trusted_pickle(path, fmt, "scikit-learn", source, trust)
    estimator = _unpickled(data, source)
    skops = _as_skops(estimator)
    tags = {"mlflow.pickle_sha256": sha256}
    if skops is not None:
        data, types = skops
        return Artifact(
            _written(work / "model.skops", data), "sklearn-skops", Trust(types), tags=tags
        )
    return Artifact(
        _written(work / "model.pkl", data), "sklearn-pickle", Trust(pickle=True), tags=tags
    )


def _xgboost(conf: dict[str, Any], folder: Path, work: Path, source: str, trust: Trust) -> Artifact:
    path = _file(folder, conf.get("data"), source)
    fmt = conf.get("model_format", "xgb")
    if fmt not in _XGBOOST_FORMATS:
        raise ImportRefused(
            source,
            f"its XGBoost model is in the {fmt!r} format; mmserve reads ubj and json "
            "(log it with model_format='ubj')",
        )
    return Artifact(path, "xgboost")


def _lightgbm(
    conf: dict[str, Any], folder: Path, work: Path, source: str, trust: Trust
) -> Artifact:
    path = _file(folder, conf.get("data"), source)
    if conf.get("model_class", "lightgbm.basic.Booster") == "lightgbm.basic.Booster":
        return Artifact(path, "lightgbm")
    _no_code(conf, "lightgbm", source)
    fmt = conf.get("serialization_format", "cloudpickle")
    if fmt == "skops":
        from serving.runtimes import sklearn

        data = path.read_bytes()
        return Artifact(sklearn.load(data, "sklearn-skops", trust, _what(source)), "lightgbm")
    data, sha256 = _trusted_pickle(path, fmt, "LightGBM", source, trust)
    tags = {"mlflow.pickle_sha256": sha256}
    return Artifact(_unpickled(data, source), "lightgbm", tags=tags)


def _onnx(conf: dict[str, Any], folder: Path, work: Path, source: str, trust: Trust) -> Artifact:
    """The graph, with any tensors MLflow saved beside it (its default) taken inside: a
    registered graph is one file, and refers to none."""
    path = _file(folder, conf.get("data"), source)
    try:
        import onnx
        from onnx import external_data_helper as external
    except ImportError:
        raise MissingRuntime("onnx", "onnx", "onnx") from None
    try:
        graph = onnx.load_model(str(path), load_external_data=False)
    except Exception as err:  # DecodeError and its kin
        raise UntrustedArtifact(_what(source), f"its ONNX graph does not parse: {err}") from None
    tensors = [t for t in external._get_all_tensors(graph) if external.uses_external_data(t)]
    if not tensors:
        return Artifact(path, "onnx")
    for tensor in tensors:  # files of this model's folder, by a plain name: no other file
        _file(path.parent, external.ExternalDataInfo(tensor).location, source)
    external.load_external_data_for_model(graph, str(path.parent))
    return Artifact(_written(work / "model.onnx", graph.SerializeToString()), "onnx")


def _file(folder: Path, name: Any, source: str) -> Path:
    """The file ``name`` of ``folder``, which the ``MLmodel`` names: refused unless it is a
    relative path to a file inside the folder."""
    path = folder / str(name)
    inside = isinstance(name, str) and path.resolve().is_relative_to(folder.resolve())
    if not inside or not path.is_file():
        raise UntrustedArtifact(
            _what(source), f"its MLmodel names {name!r}, which is no file of the model"
        )
    return path


def _no_code(conf: dict[str, Any], flavor: str, source: str) -> None:
    """Refuse a model logged with ``code_paths``: its pickle needs that code, which a
    scikit-learn or LightGBM artifact cannot carry."""
    if conf.get("code"):
        raise ImportRefused(
            source,
            f"its {flavor} flavor needs the code logged beside it ({conf['code']}), which "
            "mmserve's scikit-learn and LightGBM runtimes do not load: import its "
            "python_function flavor (--mlflow-flavor python_function --trust-code)",
        )


def _trusted_pickle(
    path: Path, fmt: Any, library: str, source: str, trust: Trust
) -> tuple[bytes, str]:
    """The bytes of a pickle (and their sha256), read only when pickles were trusted."""
    if fmt not in ("pickle", "cloudpickle"):
        reason = f"its {library} model is serialized as {fmt!r}: mmserve reads skops, pickle"
        raise ImportRefused(source, reason + " and cloudpickle")
    if not trust.pickle:
        raise UntrustedArtifact(
            _what(source),
            f"its {library} model is a {fmt} file ({path.name}), which runs arbitrary code when "
            "loaded; import it with --trust-pickle (trust_pickle=True) only if you trust its "
            "author",
        )
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _unpickled(data: bytes, source: str) -> Any:
    """The object in a trusted pickle (cloudpickle writes pickles too)."""
    try:
        return pickle.load(io.BytesIO(data))
    except Exception as err:
        reason = f"its pickle does not load here: {type(err).__name__}: {err}"
        raise ImportRefused(source, reason) from None


def _as_skops(estimator: Any) -> tuple[bytes, tuple[str, ...]] | None:
    """``estimator`` as skops bytes and the types they need trusted, when skops writes it
    and reads it back (a lambda, or a class skops cannot rebuild, it does not)."""
    import skops.io as sio

    try:
        data = bytes(sio.dumps(estimator))
        types = tuple(sorted(sio.get_untrusted_types(data=data)))
        sio.loads(data, trusted=list(types))
    except Exception:
        return None
    return data, types


def _written(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _what(source: str) -> str:
    return f"MLflow model {source}"
