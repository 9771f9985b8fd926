"""The one predict path: ``pyarrow.Table`` in, ``pyarrow.Table`` out, one vectorised model call.

Every mode (HTTP, async jobs, batch, streaming) decodes its rows into a table and calls
:meth:`Predictor.predict`, so the same row gets the same answer, bit for bit, everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.errors import (
    MissingColumn,
    ModelError,
    NullValue,
    UnexpectedColumns,
    WrongType,
)
from serving.metadata import ModelVersion


class Predictor:
    """A loaded model version and the checks that stand in front of it."""

    def __init__(self, version: ModelVersion, model: Any):
        self.version = version
        self.model = model
        self._names = [f.name for f in version.inputs]
        self._types = [f.type for f in version.inputs]
        self._strict_floats = [
            i for i, f in enumerate(version.inputs) if not f.nullable and pa.types.is_floating(f.type)
        ]
        self._numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in self._types)
        # A model fitted on a DataFrame wants one back (with the same column names).
        self._wants_frame = hasattr(model, "feature_names_in_")
        self._call = getattr(model, version.method)

    @property
    def ref(self) -> str:
        return self.version.ref

    def predict(self, table: pa.Table, passthrough: Sequence[str] = ()) -> pa.Table:
        """Score every row of ``table``; ``passthrough`` columns are copied to the front."""
        features = self._features(table)
        kept = [self._column(table, name) for name in passthrough]
        rows = features.num_rows
        if rows == 0:
            outputs = self._empty_outputs()
        else:
            outputs = self._outputs(self._invoke(self._model_input(features)), rows)
        return pa.table([*kept, *outputs.values()], names=[*passthrough, *outputs])

    # -- input ---------------------------------------------------------------------------

    def _column(self, table: pa.Table, name: str) -> pa.ChunkedArray:
        index = table.schema.get_field_index(name)
        if index < 0:
            raise MissingColumn(name)
        return table.column(index)

    def _features(self, table: pa.Table) -> pa.Table:
        """The model's columns, in registered order, cast to registered types and checked."""
        if self.version.extra_columns == "reject":
            extra = sorted(set(table.column_names) - set(self._names))
            if extra:
                raise UnexpectedColumns(extra)
        columns = []
        for feature, target in zip(self.version.inputs, self._types, strict=True):
            column = self._column(table, feature.name)
            if column.type != target:
                column = _cast(column, feature.name, target)
            if column.null_count and not feature.nullable:
                raise NullValue(feature.name, _first(pc.is_null(column)))
            columns.append(column)
        return pa.table(columns, names=self._names)

    def _model_input(self, features: pa.Table) -> Any:
        rows = features.num_rows
        pad = -rows % self.version.row_block
        if self._wants_frame or not self._numeric:
            self._check_finite_arrow(features)
            if pad:
                features = pa.concat_tables([features, features.take([rows - 1] * pad)])
            if self._wants_frame:
                return features.to_pandas()
            return np.column_stack([c.to_numpy(zero_copy_only=False) for c in features.columns])
        x = features.combine_chunks().to_batches()[0].to_tensor(null_to_nan=True).to_numpy()
        self._check_finite_numpy(x)
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        return x

    def _check_finite_numpy(self, x: np.ndarray) -> None:
        if not self._strict_floats or not np.issubdtype(x.dtype, np.floating):
            return
        # One fast reduction first (a NaN or inf anywhere makes the sum non-finite);
        # only when it trips, look for the offending column and row.
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(x.sum()):
                return
        for i in self._strict_floats:
            bad = ~np.isfinite(x[:, i])
            if bad.any():
                raise NullValue(self._names[i], int(bad.argmax()), _what(x[bad.argmax(), i]))

    def _check_finite_arrow(self, features: pa.Table) -> None:
        for i in self._strict_floats:
            column = features.column(i)
            bad = pc.invert(pc.is_finite(column))
            if pc.any(bad).as_py():
                row = _first(bad)
                raise NullValue(self._names[i], row, _what(column[row].as_py()))

    # -- the call and the output ---------------------------------------------------------

    def _invoke(self, model_input: Any) -> np.ndarray:
        try:
            return np.asarray(self._call(model_input))
        except Exception as err:
            raise ModelError(self.ref, err) from err

    def _outputs(self, raw: np.ndarray, rows: int) -> dict[str, pa.Array]:
        names = self.version.outputs
        raw = raw[:rows]
        columns = raw.reshape(rows, -1) if raw.ndim == 1 else raw
        if self.version.method == "predict_proba":
            labels = self.model.classes_.take(raw.argmax(axis=1))
            return {"label": pa.array(labels), **_split(names[1:], columns, self.ref)}
        return _split(names, columns, self.ref)

    def _empty_outputs(self) -> dict[str, pa.Array]:
        label_type = pa.array(np.asarray(getattr(self.model, "classes_", [0.0]))[:0]).type
        return {
            name: pa.array([], label_type if name == "label" else pa.float64())
            for name in self.version.outputs
        }


def _split(names: list[str], columns: np.ndarray, ref: str) -> dict[str, pa.Array]:
    if columns.shape[1] != len(names):
        raise ModelError(ref, ValueError(f"returned {columns.shape[1]} columns, expected {len(names)}"))
    return {name: pa.array(columns[:, i]) for i, name in enumerate(names)}


def _cast(column: pa.ChunkedArray, name: str, target: pa.DataType) -> pa.ChunkedArray:
    try:
        return column.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise WrongType(name, str(target), str(column.type)) from None


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def _what(value: Any) -> str:
    if value is None:
        return "null"
    return "NaN" if value != value else "infinite"
