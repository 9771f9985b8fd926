"""An MLflow pyfunc model as a ``python`` runtime folder: the MLflow model as it was logged,
beside a small class that has MLflow load it and mmserve call it.

::

    mmserve.toml          model = "mlflow_pyfunc:MLflowPyfunc", the signature's columns
    mlflow_pyfunc.py      the class (serving/imports/_pyfunc_model.py, copied)
    mlflow_pyfunc.json    how the model takes its input and names its outputs
    mlflow_model/         the downloaded MLflow model (MLmodel, python_model.pkl, code...)

The folder is registered like any ``python`` model (only with ``trust_code``; every file
hash-pinned). Its requirements are ``mlflow-skinny`` and the distributions the model's
``requirements.txt`` names, by name alone: MLflow pins exact versions, which would refuse
any other patch release; a server without one of them refuses the model by name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from serving.errors import ImportRefused
from serving.imports import _pyfunc_model
from serving.imports._mlmodel import Columns, MLmodel, columns
from serving.runtimes._manifest import NAME

MODULE = "mlflow_pyfunc"


def folder(mlmodel: MLmodel, model: Path, into: Path, source: str) -> Path:
    """The ``python`` model folder, made at ``into``, of the MLflow model in ``model``."""
    if mlmodel.inputs is None or mlmodel.outputs is None:
        side = "input" if mlmodel.inputs is None else "output"
        raise ImportRefused(
            source,
            f"it has no {side} signature, which a python_function model's schema comes from: "
            "log it with signature=infer_signature(model_input, model_output)",
        )
    inputs = columns(mlmodel.inputs, "input", source)
    outputs = columns(mlmodel.outputs, "output", source)
    shutil.copytree(model, into / _pyfunc_model.MODEL)
    shutil.copyfile(_pyfunc_model.__file__, into / f"{MODULE}.py")
    config = {
        "inputs": inputs.kind,
        "names": list(inputs.types) if inputs.named else None,
        "shapes": inputs.shapes,
        "outputs": [[name, outputs.shapes.get(name)] for name in outputs.types],
    }
    (into / _pyfunc_model.CONFIG).write_text(json.dumps(config, indent=2))
    (into / NAME).write_text(_manifest(inputs, outputs, _requirements(model)))
    return into


def _manifest(inputs: Columns, outputs: Columns, requirements: list[str]) -> str:
    """The ``mmserve.toml``: its names and texts as JSON strings, which TOML reads alike."""
    lines = [
        f'model = "{MODULE}:{_pyfunc_model.MLflowPyfunc.__name__}"',
        f"requirements = {json.dumps(requirements)}",
        "[inputs]",
        *(_column(name, dtype, inputs.shapes.get(name)) for name, dtype in inputs.types.items()),
        "[outputs]",
        *(_column(n, dtype, outputs.shapes.get(n)) for n, dtype in outputs.types.items()),
    ]
    return "\n".join(lines) + "\n"


def _column(name: str, dtype: str, shape: list[int] | None) -> str:
    if shape is None:
        return f"{json.dumps(name)} = {json.dumps(dtype)}"
    return f"{json.dumps(name)} = {{ type = {json.dumps(dtype)}, shape = {json.dumps(shape)} }}"


def _requirements(model: Path) -> list[str]:
    """``mlflow-skinny`` and the distributions of the model's ``requirements.txt``."""
    names = {"mlflow-skinny"}
    path = model / "requirements.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            requirement = Requirement(line.split("#", 1)[0].strip())
        except InvalidRequirement:  # blank, a comment, -r other.txt, a URL: nothing to check
            continue
        name = "mlflow-skinny" if requirement.name.lower() == "mlflow" else requirement.name
        marker = f"; {requirement.marker}" if requirement.marker is not None else ""
        names.add(name + marker)
    return sorted(names)
