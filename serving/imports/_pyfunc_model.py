"""An imported MLflow pyfunc model, as mmserve's ``python`` runtime calls it.

``mmserve models import`` copies this file into the folder it registers (see
:mod:`serving.imports._pyfunc`), so it imports nothing of mmserve: MLflow loads the model
(``mlflow.pyfunc.load_model``, which runs the model's code: the version was registered with
``trust_code``), and each call hands it the checked rows as its signature asks for them (a
DataFrame of columns, one array or a dict of arrays) and takes its answer back by the
signature's output names.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

CONFIG = "mlflow_pyfunc.json"
MODEL = "mlflow_model"


class MLflowPyfunc:
    """The MLflow model of the folder, called with a ``pyarrow.Table`` of its inputs."""

    def load(self, folder: Path) -> None:
        config = json.loads((folder / CONFIG).read_text())
        self.kind: str = config["inputs"]
        self.names: list[str] | None = config["names"]
        self.shapes: dict[str, list[int]] = config["shapes"]
        self.outputs: list[tuple[str, list[int] | None]] = [tuple(o) for o in config["outputs"]]
        # MLflow warns, importing pyfunc, of type hints of its own, not of this model.
        warnings.filterwarnings(
            "ignore", message=".*Any type hint is inferred", category=UserWarning
        )
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(str(folder / MODEL))

    def predict(self, table: pa.Table) -> pa.Table:
        return self._table(self.model.predict(self._input(table)), table.num_rows)

    def _input(self, table: pa.Table) -> Any:
        if self.kind == "frame":
            frame = table.to_pandas()
            if self.names is None:  # unnamed columns: MLflow takes them by position
                frame.columns = list(range(frame.shape[1]))
            return frame
        arrays = {name: _array(table[name], self.shapes.get(name)) for name in table.column_names}
        return next(iter(arrays.values())) if self.kind == "tensor" else arrays

    def _table(self, answer: Any, rows: int) -> pa.Table:
        names = [name for name, _ in self.outputs]
        found = _columns(answer, names)
        return pa.table({name: _column(found[name], shape, rows) for name, shape in self.outputs})


def _array(column: pa.ChunkedArray, shape: list[int] | None) -> np.ndarray:
    """A column as MLflow's tensor: ``[N]``, or ``[N, *shape]`` from its fixed-size lists."""
    if shape is None:
        return column.to_numpy()
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(column), *shape)


def _columns(answer: Any, names: list[str]) -> dict[str, Any]:
    """The model's answer (a DataFrame, a Series, an array, a list or a dict) by output name."""
    if isinstance(answer, dict):
        columns = answer
    elif hasattr(answer, "columns"):  # a DataFrame: by name, else by position
        given = [str(c) for c in answer.columns]
        if all(n in given for n in names):
            columns = {n: answer[n] for n in names}
        elif len(given) == len(names):
            columns = {n: answer.iloc[:, i] for i, n in enumerate(names)}
        else:
            raise ValueError(f"the model answered columns {given}, its signature {names}")
    else:
        values = np.asarray(answer)
        if len(names) == 1:
            columns = {names[0]: values}
        elif values.ndim == 2 and values.shape[1] == len(names):
            columns = {n: values[:, i] for i, n in enumerate(names)}
        else:
            raise ValueError(f"the model answered shape {values.shape}, its signature {names}")
    missing = [n for n in names if n not in columns]
    if missing:
        raise ValueError(f"the model answered no {missing[0]!r}, which its signature names")
    return columns


def _column(values: Any, shape: list[int] | None, rows: int) -> pa.Array:
    """One output as an Arrow array: a tensor's rows as fixed-size lists of its values."""
    if shape is None:
        values = np.asarray(values)
        return pa.array(values.ravel() if values.ndim == 2 and values.shape[1] == 1 else values)
    size = math.prod(shape)
    flat = np.asarray(values).reshape(rows, size).ravel()
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), size)
