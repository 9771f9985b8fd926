"""Inference pipelines: registered models applied in order, each one's output feeding the next.

What the next model sees: the previous step's input table with that step's outputs merged
over it (an output replaces the input column of the same name, other outputs are added).
So a preprocessing model that outputs ``f0..f4`` (scaled) hands the predictor its scaled
features, and a request column that no step outputs (``customer_id``, a raw feature a
later model also takes) reaches every step. Each step is a plain :class:`Predictor` call:
its schema checks, casts and padding apply as they do alone, so a pipeline's answer equals
applying its models by hand, bit for bit.

A :class:`Pipeline` is a :class:`~serving.predictor.Scorer`: the jobs, batch and stream
modes score one as they score a single model (:mod:`serving.scorers` builds it from a
chain reference, ``fraud-prep:1,fraud@production``). An input error raised by a step
names that step, since a later step's input is not only the request's own columns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pyarrow as pa

from serving.codecs import Matrix, Records, Rows
from serving.codecs.raw import Raw
from serving.codecs.raw import table as raw_table
from serving.errors import InputError, MissingColumn
from serving.metadata import Feature, ModelVersion
from serving.predictor import Predictor, score_valid


def merge(inputs: pa.Table, outputs: pa.Table) -> pa.Table:
    """The next step's input: ``outputs`` over ``inputs``, row for row."""
    table = inputs
    for name in outputs.column_names:
        index = table.schema.get_field_index(name)
        column = outputs.column(name)
        table = (
            table.set_column(index, name, column)
            if index >= 0
            else table.append_column(name, column)
        )
    return table


def inputs_of(versions: Sequence[ModelVersion]) -> list[Feature]:
    """The columns a request must carry: each step's inputs that no earlier step outputs."""
    needed: dict[str, Feature] = {}
    produced: set[str] = set()
    for version in versions:
        for feature in version.inputs:
            if feature.name not in produced:
                needed.setdefault(feature.name, feature)
        produced |= set(version.outputs)
    return list(needed.values())


def table_of(rows: Rows | Raw, versions: Sequence[ModelVersion] = ()) -> pa.Table:
    """``rows`` as a table; a raw body is the one row of the one input of the models
    ``versions`` (applied in order) take."""
    if isinstance(rows, Raw):
        return raw_table(rows, inputs_of(versions))
    return rows.table() if isinstance(rows, Matrix | Records) else rows


class Pipeline:
    """Models applied in order, with :class:`Predictor`'s interface (``predict``,
    ``predict_valid``, ``inputs``, ``outputs``, ``ref``): a
    :class:`~serving.predictor.Scorer`, so any mode that scores a table can take one."""

    def __init__(self, predictors: Sequence[Predictor]):
        if not predictors:
            raise ValueError("a pipeline needs at least one model")
        self.predictors = list(predictors)
        self.versions = [p.version for p in self.predictors]
        self.inputs = inputs_of(self.versions)
        self.outputs = list(self.versions[-1].outputs)
        self.output_content_types = dict(self.versions[-1].output_content_types)

    @property
    def ref(self) -> str:
        """``prep:1,fraud:7``: the pinned versions, in order."""
        return ",".join(v.ref for v in self.versions)

    def predict(self, rows: Rows | Raw, passthrough: Sequence[str] = ()) -> pa.Table:
        """Score ``rows`` through every step; ``passthrough`` request columns go first."""
        table = table_of(rows, self.versions)
        missing = [name for name in passthrough if name not in table.column_names]
        if missing:  # before any step runs: no model call for an answer that cannot be sent
            raise MissingColumn(missing[0])
        current = table
        for step, predictor in enumerate(self.predictors[:-1], 1):
            current = merge(current, _step(step, predictor, current))
        answer = _step(len(self.predictors), self.predictors[-1], current)
        kept = [table.column(name) for name in passthrough]
        return pa.table([*kept, *answer.columns], names=[*passthrough, *answer.column_names])

    def predict_valid(
        self, table: pa.Table, passthrough: Sequence[str] = ()
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Score the rows of ``table`` that every step takes; the others come back as (row,
        reason), as :meth:`Predictor.predict_valid` does (rows keep their numbers through
        the steps, so a row a later step refuses is the request's row of that number)."""
        return score_valid(self, table, passthrough)


def _step(number: int, predictor: Predictor, table: pa.Table) -> pa.Table:
    """``predictor``'s answer to ``table``, as step ``number``."""
    with step_named(number, predictor.ref):
        return predictor.predict(table)


@contextmanager
def step_named(number: int, ref: str) -> Iterator[None]:
    """An input error raised within says which step refused it (a model error names its
    model already): ``step 1 (prep:1): column 'x' ...``."""
    try:
        yield
    except InputError as err:
        err.message = f"step {number} ({ref}): {err.message}"
        err.args = (err.message,)
        raise
