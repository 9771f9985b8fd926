"""The one predict path: ``pyarrow.Table`` in, ``pyarrow.Table`` out, one vectorised model call.

Every mode (HTTP, async jobs, batch, streaming) decodes its rows into a table and calls
:meth:`Predictor.predict`, so the same row gets the same answer, bit for bit, everywhere.
The modes that score whole tables (jobs, batch, streams) program against :class:`Scorer`,
which one model (a :class:`Predictor`) and a chain of them (a
:class:`~serving.endpoints.pipeline.Pipeline`) both are.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.codecs import Matrix, Records, Rows, raw, v1
from serving.errors import (
    InputError,
    MissingColumn,
    ModelError,
    NullValue,
    OutOfRange,
    OutOfTypeRange,
    UnexpectedColumns,
    WrongType,
)
from serving.metadata import Feature, ModelVersion, arrow_type
from serving.runtimes import Model

# From this size on the model's matrix is built column by column (see Predictor._matrix):
# below it Arrow's to_tensor is faster, above it (out of L2 cache) 1.4x slower.
_COLUMNWISE_BYTES = 1 << 20
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Scorer(Protocol):
    """What every mode that scores tables calls: one model or a chain of models."""

    @property
    def ref(self) -> str:
        """The pinned reference: ``fraud:7``, or a chain's ``fraud-prep:1,fraud:7``."""
        ...

    @property
    def inputs(self) -> list[Feature]:
        """The columns a request must carry, with their registered types."""
        ...

    @property
    def outputs(self) -> list[str]:
        """The columns of every answer, in order (after any passthrough columns)."""
        ...

    @property
    def output_content_types(self) -> dict[str, str]:
        """Media types of binary outputs that declare one (``image/png``)."""
        ...

    def predict(self, rows: Rows | raw.Raw, passthrough: Sequence[str] = ()) -> pa.Table:
        """Score every row of ``rows``; ``passthrough`` columns are copied to the front."""
        ...

    def predict_valid(
        self, table: pa.Table, passthrough: Sequence[str] = ()
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Score the rows that fit; the others come back as (row, reason)."""
        ...


def score_valid(
    scorer: Scorer, table: pa.Table, passthrough: Sequence[str] = ()
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Score the rows of ``table`` that fit ``scorer``; the others come back as (row,
    reason). A table with a bad row is halved until the bad rows stand alone: a few bad
    rows cost a few extra calls, and a row's answer does not depend on its batch. Used
    where one bad row must not stop the rest (batch ``skip``, a stream's dead letters)."""
    try:
        return scorer.predict(table, passthrough), []
    except InputError as err:
        if table.num_rows <= 1:
            return scorer.predict(table.slice(0, 0), passthrough), [(0, _alone(err))]
    half = table.num_rows // 2
    left, left_bad = score_valid(scorer, table.slice(0, half), passthrough)
    right, right_bad = score_valid(scorer, table.slice(half), passthrough)
    bad = left_bad + [(row + half, reason) for row, reason in right_bad]
    return pa.concat_tables([left, right]), bad


def _alone(err: InputError) -> str:
    """The reason a row refused alone was refused: "at row 0" of its one-row table would
    only contradict the row number the caller reports."""
    if isinstance(err, NullValue | OutOfRange | WrongType) and err.row is not None:
        return err.message.removesuffix(f" at row {err.row}").removesuffix(",")
    return err.message


@dataclass(frozen=True, slots=True)
class Prepared:
    """One request's rows, checked and in model form, waiting for :meth:`Predictor.run`:
    a padded matrix (numeric models) or the checked feature table."""

    rows: int
    x: Any
    passthrough: Sequence[str] = ()
    kept: Sequence[pa.ChunkedArray] = ()
    as_rows: bool = False
    """Answer with the rows as Python dicts too (a JSON answer): see :class:`Answer`."""
    files: tempfile.TemporaryDirectory[str] | None = None
    """The local copies of the bytes of ``Feature.path`` inputs, removed after the call."""


class Answer(NamedTuple):
    """One request's answer. ``rows``, asked for by ``Prepared.as_rows``, are the table's rows
    as Python dicts when the request shared its call: made once for the whole batch, they
    cost a request a fraction of its own ``table.to_pylist()``, which on a one-row request
    was a tenth of the server's time. ``None``: convert ``table``."""

    table: pa.Table
    rows: list[dict[str, Any]] | None = None


class Predictor:
    """A loaded model version and the checks that stand in front of it."""

    def __init__(self, version: ModelVersion, model: Model):
        self.version = version
        self.runtime = model
        self._names = [f.name for f in version.inputs]
        self._types = [f.type for f in version.inputs]
        self._strict_floats = [
            i
            for i, f in enumerate(version.inputs)
            if not f.nullable and pa.types.is_floating(f.type)
        ]
        self._floats = [i for i, t in enumerate(self._types) if pa.types.is_floating(t)]
        # Tree models compare in float32: a finite float64 beyond its range makes them raise.
        self._limit = _FLOAT32_MAX if model.float32 else None
        # What _valid checks: the nulls of required columns that are not floats, and the
        # values of the floats that must be finite (or in range), a null being a NaN.
        self._required = [
            i for i, f in enumerate(version.inputs) if not f.nullable and i not in self._floats
        ]
        self._checked = self._floats if self._limit is not None else self._strict_floats
        self._checked_types = {self._types[i] for i in self._checked}
        self._numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in self._types)
        self._wants_table = model.table
        self._wants_frame = model.frame or self._wants_table
        self._categories = {
            f.name: pa.array(f.categories, f.type)
            for f in version.inputs
            if f.categories is not None
        }
        self._output_types = {
            name: output_type(version, name, model.classes) for name in version.outputs
        }
        self._paths = [f.name for f in version.inputs if f.path] if model.table else []
        # The fast path takes tables that already have exactly these columns and one float
        # type; anything else goes through selection, casts and per-column checks. A frame
        # model of float columns takes it too: its DataFrame is made of the matrix (_frame).
        self._schema = pa.schema(list(zip(self._names, self._types, strict=True)))
        self._dtype = _float_dtype(self._types) if not self._wants_table else None
        self._columns: Any = None  # a frame model's column Index, made at its first call
        # What a value of a row that came by name must be to go into its column as it is
        # (the record lane, see _records_input); None: no lane for the model.
        # The lane ends where the table path would: in a float64 matrix, or a table.
        takes = [_taker(t, self._limit) for t in self._types]
        tables = self._wants_table or not self._numeric or self._wants_frame
        lane = self._dtype == np.float64 or (self._dtype is None and tables)
        lane = lane and not self._categories and not self._paths
        accepts = [take for take in takes if take is not None]
        self._accepts = accepts if lane and len(accepts) == len(takes) else None

    @property
    def ref(self) -> str:
        return self.version.ref

    @property
    def model(self) -> Any:
        """The library's own model object (an estimator, a Booster...)."""
        return self.runtime.native

    @property
    def inputs(self) -> list[Feature]:
        return self.version.inputs

    @property
    def outputs(self) -> list[str]:
        return self.version.outputs

    @property
    def output_content_types(self) -> dict[str, str]:
        return self.version.output_content_types

    def predict(self, rows: Rows | raw.Raw, passthrough: Sequence[str] = ()) -> pa.Table:
        """Score every row of ``rows`` (a table, a :class:`~serving.codecs.Matrix` of its
        columns, or a raw body); ``passthrough`` columns of a table are copied to the front."""
        return self.run([self.prepare(rows, passthrough)])[0].table

    def predict_valid(
        self, table: pa.Table, passthrough: Sequence[str] = ()
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Score the rows of ``table`` that fit the schema; the others come back as (row,
        reason): see :func:`score_valid`."""
        return score_valid(self, table, passthrough)

    def prepare(
        self, rows: Rows | raw.Raw, passthrough: Sequence[str] = (), as_rows: bool = False
    ) -> Prepared:
        """Check ``rows`` against the input schema and turn them into model input: every
        input error is raised here, naming the request's own column and row. A raw body (a
        file, a text) is the one row of a model whose one input takes it."""
        if isinstance(rows, raw.Raw):
            if rows.path is not None and self._paths == self._names:  # the file as it is
                raw.check(rows.media_type, self.version.inputs)
                paths = pa.table({self._names[0]: [str(rows.path)]})
                return Prepared(1, paths, as_rows=as_rows)
            rows = raw.table(rows, self.version.inputs)
        if isinstance(rows, Records):
            x = self._records_input(rows.rows) if not passthrough else None
            if x is not None:
                return Prepared(len(rows.rows), x, as_rows=as_rows)
            rows = rows.table()
        if isinstance(rows, Matrix):
            x = self._matrix_input(rows)
            if x is not None:
                return Prepared(len(rows.values), x, as_rows=as_rows)
            rows = rows.table()  # the checked path, which names what is wrong
        return self._prepare_table(rows, passthrough, as_rows)

    def _prepare_table(
        self, table: pa.Table, passthrough: Sequence[str], as_rows: bool
    ) -> Prepared:
        kept = [self._column(table, name) for name in passthrough]
        x = self._fast_input(table)
        if x is not None:
            return Prepared(table.num_rows, x, passthrough, kept, as_rows)
        checked = self._dtype is None and self._valid(table)
        features = table if checked else self._features(table, passthrough)
        if features.num_rows == 0:
            return Prepared(0, None, passthrough, kept, as_rows)
        if self._wants_table or not self._numeric or (self._wants_frame and self._dtype is None):
            if not checked:
                self._check_finite_arrow(features)
            if self._paths:
                features, files = _spooled(features, self._paths)
                return Prepared(features.num_rows, features, passthrough, kept, as_rows, files)
            return Prepared(features.num_rows, features, passthrough, kept, as_rows)
        x = self._matrix(features)
        self._check_finite_numpy(x)  # padding only repeats the last row: same first bad row
        return Prepared(features.num_rows, x, passthrough, kept, as_rows)

    def run(self, batch: Sequence[Prepared]) -> list[Answer]:
        """Score prepared requests in ONE model call and split the answers back, in order.
        Rows are padded to a multiple of ``row_block``, so a row's answer does not depend on
        the other rows it shares the call with."""
        rows = sum(p.rows for p in batch)
        try:
            outputs = self._call(batch, rows)
        finally:
            for p in batch:
                if p.files is not None:
                    p.files.cleanup()
        if len(batch) == 1:
            p = batch[0]
            return [
                Answer(pa.table([*p.kept, *outputs.values()], names=[*p.passthrough, *outputs]))
            ]
        whole = pa.table(outputs)
        batch_rows = whole.to_pylist() if any(_wants_rows(p) for p in batch) else []
        offsets = np.cumsum([0, *(p.rows for p in batch)]).tolist()
        return [
            Answer(
                _with_kept(p, whole.slice(start, p.rows)),
                batch_rows[start : start + p.rows] if _wants_rows(p) else None,
            )
            for p, start in zip(batch, offsets, strict=False)
        ]

    def _call(self, batch: Sequence[Prepared], rows: int) -> dict[str, Any]:
        """The outputs of one model call on the rows of ``batch``."""
        if rows == 0:
            return self._empty_outputs()
        model_input = self._join([p for p in batch if p.rows])
        scores = self._invoke(self.runtime.scores, model_input)
        if isinstance(scores, pa.Table | Mapping):
            return self._named_outputs(scores, rows)
        scores = np.asarray(scores)
        labels = None
        if self.version.method == "predict_proba":
            labels = np.asarray(self._invoke(lambda x: self.runtime.labels(x, scores), model_input))
        return self._outputs(scores, rows, labels)

    # -- input ---------------------------------------------------------------------------

    def _column(self, table: pa.Table, name: str) -> pa.ChunkedArray:
        index = table.schema.get_field_index(name)
        if index < 0:
            raise MissingColumn(name)
        return table.column(index)

    def _features(self, table: pa.Table, passthrough: Sequence[str]) -> pa.Table:
        """The model's columns, in registered order, cast to registered types and checked."""
        if self.version.extra_columns == "reject":
            extra = sorted(set(table.column_names) - set(self._names) - set(passthrough))
            if extra:
                raise UnexpectedColumns(extra)
        columns = []
        for feature, target in zip(self.version.inputs, self._types, strict=True):
            column = self._column(table, feature.name)
            if column.type != target:
                column = _cast(column, feature.name, target)
            if column.null_count and not feature.nullable:
                raise NullValue(feature.name, _first(pc.is_null(column)))
            if feature.name in self._categories:
                _check_category(column, feature.name, self._categories[feature.name])
            columns.append(column)
        return pa.table(columns, names=self._names)

    def _join(self, batch: Sequence[Prepared]) -> Any:
        """One model input for the whole batch, padded to a multiple of ``row_block``."""
        if isinstance(batch[0].x, np.ndarray):
            if len(batch) == 1:
                x = batch[0].x  # already padded
            else:
                x = _pad(np.concatenate([p.x[: p.rows] for p in batch]), self.version.row_block)
            return self._frame(x) if self._wants_frame else x
        features = self._joined_tables(batch)
        rows = features.num_rows
        pad = -rows % self.version.row_block
        if pad:  # slices of the last row, not copies: take() cost a one-row call 60 µs
            features = pa.concat_tables([features, *[features.slice(rows - 1, 1)] * pad])
        if self._wants_table:
            return features
        if self._wants_frame:
            return features.to_pandas()
        return np.column_stack([c.to_numpy(zero_copy_only=False) for c in features.columns])

    def _joined_tables(self, batch: Sequence[Prepared]) -> pa.Table:
        """The batch's feature tables as one; rows that came by name (the record lane) get
        their columns made at once, a run of requests at a time."""
        tables: list[pa.Table] = []
        named: list[dict[str, Any]] = []
        for p in batch:
            if isinstance(p.x, _Named):
                named += p.x.rows
                continue
            if named:
                tables.append(self._named_table(named))
                named = []
            tables.append(p.x)
        if named:
            tables.append(self._named_table(named))
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _named_table(self, rows: list[dict[str, Any]]) -> pa.Table:
        names, types = self._names, self._types
        columns = [pa.array([r[n] for r in rows], t) for n, t in zip(names, types, strict=True)]
        return pa.Table.from_arrays(columns, schema=self._schema)

    def _records_input(self, rows: list[dict[str, Any]]) -> Any:
        """The model input of rows that came by name, when every row has exactly the
        features as keys and every value is of its column's type as it is (an int for an
        int64, a finite float, or an int float64 holds exactly, for a double, a string for
        a string): the float64 matrix of a model of double inputs, else the rows, whose
        columns the batch makes at once. ``None`` otherwise: the table path, which names
        what is wrong, and whose answers these are."""
        accepts = self._accepts
        if accepts is None:
            return None
        names, width = self._names, len(self._names)
        for row in rows:
            if len(row) != width:
                return None
            for name, accept in zip(names, accepts, strict=True):
                if not accept(row.get(name, _MISSING)):
                    return None
        if self._dtype is None:
            return _Named(rows)
        values = np.array([[row[n] for n in names] for row in rows], dtype=self._dtype)
        return self._matrix_input(Matrix(values, names))

    def _frame(self, x: np.ndarray) -> Any:
        """A frame model's DataFrame of the float matrix ``x``: the one ``Table.to_pandas``
        makes of the same columns (one column-major block), without its per-column work,
        which took a one-row call from about 1.2 to 2 ms (HistGradientBoosting, 25 columns)."""
        import pandas as pd  # only frame models need it, and they have imported it

        if self._columns is None:  # made once: from the names, it took 30 of a call's 40 µs
            self._columns = pd.Index(self._names)
        return pd.DataFrame(np.asfortranarray(x), columns=self._columns, copy=False)

    def _matrix_input(self, rows: Matrix) -> np.ndarray | None:
        """The model input of a float matrix whose columns are exactly the features, for a
        model of float inputs, with every value finite: the matrix itself, in the model's
        dtype and padded (what the table path builds from the same values). ``None``
        otherwise, for the table path."""
        values = rows.values
        if (
            self._dtype is None
            or values.ndim != 2
            or values.dtype.kind != "f"
            or len(values) == 0
            or list(rows.names) != self._names
        ):
            return None
        x = _pad(np.ascontiguousarray(values, dtype=self._dtype), self.version.row_block)
        return x if self._fits(x) else None

    def _fast_input(self, table: pa.Table) -> np.ndarray | None:
        """The model input of a table that has exactly the registered float columns and no
        null, NaN or infinite value; ``None`` sends every other table down the checked path,
        which raises the right error (or, for NaN in nullable columns, scores it)."""
        if self._dtype is None or table.num_rows == 0 or not table.schema.equals(self._schema):
            return None
        x = self._matrix(table)
        return x if self._fits(x) else None

    def _valid(self, table: pa.Table) -> bool:
        """Whether ``table`` is its own checked features, as :meth:`_features` and
        :meth:`_check_finite_arrow` would pass it on: exactly the registered columns and
        types, no null where none is allowed, every float finite and in range, no category
        to check. The fast path of a model that takes a table (or mixed columns): those
        checks, column by column, were most of a one-row call (20 columns: 260 of 320 µs)."""
        if self._categories or table.num_rows == 0 or not table.schema.equals(self._schema):
            return False
        if any(table.column(i).null_count for i in self._required):
            return False
        if not self._checked:
            return True
        floats = table if len(self._checked) == len(self._types) else table.select(self._checked)
        small = table.num_rows * len(self._checked) * 8 < _COLUMNWISE_BYTES
        if small and len(self._checked_types) == 1:  # one matrix (to_tensor), one check
            batches = floats.to_batches()
            if len(batches) != 1:
                batches = floats.combine_chunks().to_batches()
            return self._fits(batches[0].to_tensor(null_to_nan=True).to_numpy())
        return all(
            self._fits(chunk.to_numpy(zero_copy_only=False))  # a null is NaN: not finite
            for column in floats.columns
            for chunk in column.chunks
        )

    def _fits(self, x: np.ndarray) -> bool:
        """Whether every value of ``x`` is finite and within what the model computes in."""
        if x.size == 0:
            return True
        if self._limit is None or x.dtype != np.float64:
            # A NaN or an infinity makes the sum NaN or infinite, in one pass and without a
            # temporary (isfinite(x).all() took 1.6x as long); a sum that overflows sends
            # finite values down the checked path, which passes them.
            return bool(np.isfinite(x.sum()))
        # Its smallest and largest values tell (a NaN makes both NaN, which compares False),
        # in two passes without temporaries: isfinite and abs took 2.3 to 2.7 ms for 100,000
        # rows of 25 float64, min and max 0.8 to 1.0 ms.
        return bool(-self._limit <= x.min() and x.max() <= self._limit)

    def _matrix(self, features: pa.Table) -> np.ndarray:
        """The features as one C-ordered matrix (what sklearn is called with directly), padded
        to a multiple of ``row_block`` rows by repeating the last row."""
        rows, width = features.num_rows, features.num_columns
        padded = rows + (-rows % self.version.row_block)
        if self._dtype is None or rows * width * self._dtype.itemsize < _COLUMNWISE_BYTES:
            x = features.combine_chunks().to_batches()[0].to_tensor(null_to_nan=True).to_numpy()
            return _pad(x, self.version.row_block)
        # Large tables: copy each column into one column-major buffer (sequential copies),
        # then transpose it once; faster than Arrow's row-major to_tensor, same values.
        by_column = np.empty((width, padded), self._dtype)
        for j, column in enumerate(features.columns):
            _copy_column(column, by_column[j])
        by_column[:, rows:] = by_column[:, rows - 1 : rows]
        # A frame model's DataFrame is column-major (_frame): the transpose is the copy; so
        # is a column-major model's matrix. Others get it in row order (a second copy).
        if self._wants_frame or self.runtime.column_major:
            return by_column.T
        return np.ascontiguousarray(by_column.T)

    def _check_finite_numpy(self, x: np.ndarray) -> None:
        if not np.issubdtype(x.dtype, np.floating):
            return
        # One fast pass first; only when it trips, look for the offending column and row.
        if self._fits(x):
            return
        for i in self._strict_floats:
            bad = ~np.isfinite(x[:, i])
            if bad.any():
                raise NullValue(self._names[i], int(bad.argmax()), _what(x[bad.argmax(), i]))
        if self._limit is not None:
            for i in self._floats:
                big = np.abs(x[:, i]) > self._limit  # NaN compares False: a null stays a null
                if big.any():
                    row = int(big.argmax())
                    raise OutOfRange(self._names[i], row, float(x[row, i]), self._limit)

    def _check_finite_arrow(self, features: pa.Table) -> None:
        for i in self._strict_floats:
            column = features.column(i)
            bad = pc.invert(pc.is_finite(column))
            if pc.any(bad).as_py():
                row = _first(bad)
                raise NullValue(self._names[i], row, _what(column[row].as_py()))
        if self._limit is not None:
            for i in self._floats:
                column = features.column(i)
                big = pc.fill_null(pc.greater(pc.abs(column), self._limit), False)
                if pc.any(big).as_py():
                    row = _first(big)
                    raise OutOfRange(self._names[i], row, column[row].as_py(), self._limit)

    # -- the call and the output ---------------------------------------------------------

    def _invoke(self, method: Any, model_input: Any) -> Any:
        try:
            return method(model_input)
        except InputError:  # the model's own refusal of its input (InvalidInput): a 4xx
            raise
        except Exception as err:
            raise ModelError(self.ref, err) from err

    def _outputs(
        self, raw: np.ndarray, rows: int, labels: np.ndarray | None
    ) -> dict[str, pa.Array]:
        names = self.version.outputs
        raw = raw[:rows]
        columns = raw.reshape(rows, -1) if raw.ndim == 1 else raw
        if labels is not None:
            outputs = {"label": pa.array(labels[:rows]), **_split(names[1:], columns, self.ref)}
        else:
            outputs = _split(names, columns, self.ref)
        for name in self.version.output_types:  # a runtime's labels as recorded, say
            if outputs[name].type != self._output_types[name]:
                outputs[name] = outputs[name].cast(self._output_types[name])
        return outputs

    def _named_outputs(self, raw: pa.Table | Mapping[str, Any], rows: int) -> dict[str, Any]:
        """The outputs of a model that answers with named columns, in the recorded order
        and types: a missing column, a short one or a value of another type is the model's
        failure, never passed on as an answer."""
        outputs = {}
        for name, target in self._output_types.items():
            try:
                array = _arrow_output(raw[name])
                if len(array) < rows:
                    raise ValueError(f"{name!r} has {len(array)} rows, expected {rows}")
                array = array.slice(0, rows) if len(array) > rows else array
                outputs[name] = array if array.type == target else array.cast(target, safe=True)
            except (KeyError, ValueError, TypeError, pa.ArrowException) as err:
                raise ModelError(self.ref, err) from err
        return outputs

    def _empty_outputs(self) -> dict[str, pa.Array]:
        return {name: pa.array([], t) for name, t in self._output_types.items()}


class _Named:
    """Rows that came by name and fit the schema as they are (see Predictor._records_input)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows


_MISSING = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_INT = 2**53  # integers a double holds exactly


def _taker(t: pa.DataType, limit: float | None) -> Callable[[Any], bool] | None:
    """What a JSON value must be to go into a column of type ``t`` as it is, with what the
    table path would make of it (an int into a double: exactly that number); ``None`` for
    a type without the record lane."""
    if t == pa.int64():
        return lambda v: type(v) is int and _INT64_MIN <= v <= _INT64_MAX
    if t == pa.float64():
        bound = math.inf if limit is None else limit

        def fits(v: Any) -> bool:
            if type(v) is float:
                return -bound <= v <= bound and v == v  # finite (NaN compares False)
            return type(v) is int and -_EXACT_INT < v < _EXACT_INT

        return fits
    if t == pa.string():
        return lambda v: type(v) is str and (v.isascii() or v1.is_text(v))
    if t == pa.bool_():
        return lambda v: type(v) is bool
    return None


def _spooled(
    features: pa.Table, names: list[str]
) -> tuple[pa.Table, tempfile.TemporaryDirectory[str]]:
    """``features`` with each column of ``names`` (bytes) replaced by the paths of local
    files holding them, in a private folder (mode 0700) the caller removes after the call;
    a null stays a null."""
    files = tempfile.TemporaryDirectory(prefix="mmserve-files-")
    for name in names:
        index = features.schema.get_field_index(name)
        paths: list[str | None] = []
        for row, value in enumerate(features.column(index).to_pylist()):
            if value is None:
                paths.append(None)
                continue
            path = Path(files.name) / f"{name}-{row}"
            path.write_bytes(value)
            paths.append(str(path))
        features = features.set_column(index, name, pa.array(paths, pa.string()))
    return features, files


def _arrow_output(column: Any) -> pa.Array | pa.ChunkedArray:
    """A named output as Arrow; an ``[N, K]`` array is N lists of K values (an embedding)."""
    if isinstance(column, pa.Array | pa.ChunkedArray):
        return column
    if isinstance(column, np.ndarray) and column.ndim == 2:
        values = pa.array(np.ascontiguousarray(column).reshape(-1))
        return pa.FixedSizeListArray.from_arrays(values, column.shape[1])
    return pa.array(column)


def _wants_rows(p: Prepared) -> bool:
    return p.as_rows and not p.passthrough  # passthrough columns are not in the batch's rows


def _with_kept(p: Prepared, answer: pa.Table) -> pa.Table:
    """``answer`` behind the request's passthrough columns (a slice alone when it has none:
    one slice per request is what a large micro-batch can afford)."""
    if not p.passthrough:
        return answer
    return pa.table([*p.kept, *answer.columns], names=[*p.passthrough, *answer.column_names])


def _pad(x: np.ndarray, block: int) -> np.ndarray:
    """``x`` with its last row repeated up to a multiple of ``block`` rows."""
    rows = len(x)
    pad = -rows % block
    if not pad:
        return x
    out = np.empty((rows + pad, *x.shape[1:]), x.dtype)
    out[:rows], out[rows:] = x, x[-1]
    return out


def _float_dtype(types: list[pa.DataType]) -> np.dtype | None:
    """The numpy dtype if every input is float32, or every input float64; else ``None``."""
    if types and all(t == types[0] for t in types) and types[0] in (pa.float32(), pa.float64()):
        return np.dtype(types[0].to_pandas_dtype())
    return None


def _copy_column(column: pa.ChunkedArray, out: np.ndarray) -> None:
    """Copy ``column`` to the start of ``out``, chunk by chunk; nulls become NaN (as with
    ``to_tensor(null_to_nan=True)``)."""
    if column.num_chunks == 1:  # the common case: to_numpy is then a view, not a copy
        out[: len(column)] = column.to_numpy()
        return
    start = 0
    for chunk in column.chunks:
        out[start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
        start += len(chunk)


def output_type(version: ModelVersion, name: str, classes: Any = None) -> pa.DataType:
    """An output's Arrow type: as recorded; a label's is its classes' (the loaded model's
    ``classes`` if given, else the version's); a score is float64."""
    if name in version.output_types:
        return arrow_type(version.output_types[name])
    if name == "label":
        classes = classes if classes is not None else version.classes or [0.0]
        return pa.array(np.asarray(classes)[:0]).type
    return pa.float64()


def _split(names: list[str], columns: np.ndarray, ref: str) -> dict[str, pa.Array]:
    if columns.shape[1] != len(names):
        reason = f"returned {columns.shape[1]} columns, expected {len(names)}"
        raise ModelError(ref, ValueError(reason))
    if columns.dtype.kind == "f":  # float32 models too: one output schema, however many rows
        columns = columns.astype(np.float64, copy=False)  # exact: widening loses nothing
    return {name: pa.array(columns[:, i]) for i, name in enumerate(names)}


def _check_category(column: pa.ChunkedArray, name: str, categories: pa.Array) -> None:
    """Refuse a value that is none of a categorical feature's categories, at its first row."""
    unknown = pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, value_set=categories)))
    if pc.any(unknown).as_py():
        row = _first(unknown)
        shown = ", ".join(str(c) for c in categories.to_pylist()[:5])
        more = ", ..." if len(categories) > 5 else ""
        expected = f"one of the {len(categories)} categories it was trained with ({shown}{more})"
        raise WrongType(name, expected, repr(column[row].as_py()), row)


def _cast(column: pa.ChunkedArray, name: str, target: pa.DataType) -> pa.ChunkedArray:
    """``column`` as ``target`` when that is lossless and unambiguous: text "3" is an int, 3.0
    an int, 3 a double; but a boolean is no number, a number is no category (a headerless
    CSV in the wrong order), and 3.5 is no int. A refusal names the first row refused."""
    source = column.type
    if pa.types.is_null(source) or column.null_count == len(column):
        return pa.chunked_array([pa.nulls(len(column), target)])
    if (pa.types.is_boolean(source) != pa.types.is_boolean(target)) and not _is_text(source):
        raise WrongType(name, str(target), str(source), _first(pc.is_valid(column)))
    if _is_text(target) and not _is_text(source):
        raise WrongType(name, str(target), str(source), _first(pc.is_valid(column)))
    try:
        return column.cast(target, safe=True)
    except _CAST_ERRORS:
        raise _refusal(column, name, target) from None


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _refusal(column: pa.ChunkedArray, name: str, target: pa.DataType) -> InputError:
    """Why ``column`` is not ``target``, at the first row refused: a number beyond the
    type's range, or the value (text that is no number, 3.5 for an int)."""
    try:
        column.slice(0, 0).cast(target, safe=True)
    except _CAST_ERRORS:  # no value of this type is one of that type (a list, a date)
        return WrongType(name, str(target), str(column.type), _first(pc.is_valid(column)))
    row = _first_refused(column, target)
    value = column[row].as_py()
    if _is_integral(value):
        return OutOfTypeRange(name, row, str(value).strip(), str(target))
    shown = value if len(str(value)) <= 40 else str(value)[:37] + "..."
    return WrongType(name, str(target), repr(shown), row)


def _first_refused(column: pa.ChunkedArray, target: pa.DataType) -> int:
    """The first row of ``column`` that does not cast to ``target``: the half holding it is
    halved again (log2(rows) casts, of half the rows, a quarter...: one cast's work in all)."""
    start, end = 0, len(column)
    while end - start > 1:
        middle = (start + end) // 2
        try:
            column.slice(start, middle - start).cast(target, safe=True)
            start = middle
        except _CAST_ERRORS:
            end = middle
    return start


def _is_integral(value: Any) -> bool:
    """Whether ``value`` is a whole number (an int, 1e30, or text "123456789012345678901")."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        try:
            int(value.strip())
        except ValueError:
            return False
        return True
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


def _what(value: Any) -> str:
    if value is None:
        return "a null"
    return "a NaN" if value != value else "an infinite"
