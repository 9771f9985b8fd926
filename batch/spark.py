"""Score a Spark DataFrame with a registered model: ``mapInArrow`` over the one predict path.

::

    from batch.spark import score
    scored = score(df, "churn@production", passthrough=["customer_id"])
    scored.write.parquet("s3://bucket/scores/2026-12-05/")

:func:`score` pins the reference on the driver and reads the answer's schema from the
registry (no model is loaded there), then returns a lazy DataFrame; each Python worker of
the executors loads the model once and scores the Arrow batches Spark hands it (each
``spark.sql.execution.arrow.maxRecordsPerBatch`` rows) exactly as ``mmserve batch run``
scores a part's. The executors need mmserve (``pip install 'mmserve[spark]'``) and to reach
the store; where it is and how (the store URL, ``AWS_*``, the trust policy) travels with the
job from the driver's settings.

Bad rows: ``on_error="fail"`` (the default) fails the Spark job with the batch runner's
message naming the partition, the row in it, the reason and the row's first passthrough
value; ``"skip"`` leaves a bad row out of the answers and each task writes the rows it set
aside to ``<rejects>/part-<partition>.parquet`` (the passthrough columns, ``row``,
``reason``): ``spark.read.parquet(rejects)`` reads them all. Use a fresh ``rejects`` folder
per job; a task run again (a retry, a second action on the same DataFrame) rewrites its own
file. Needs ``pip install 'mmserve[spark]'``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from batch import engines
from serving.errors import MissingPackage
from serving.settings import Settings

try:
    from pyspark import TaskContext
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType
except ImportError as err:  # pragma: no cover - the extra is part of dev
    raise MissingPackage(
        "batch.spark", "package", "pyspark", "pip install 'mmserve[spark]'"
    ) from err

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def score(
    df: DataFrame,
    ref: str,
    *,
    passthrough: Sequence[str] = (),
    on_error: engines.OnError = "fail",
    rejects: str | None = None,
    settings: Settings | None = None,
) -> DataFrame:
    """``df`` scored by ``ref`` (a model, ``churn@production``, or a chain, ``prep:1,churn``),
    its versions pinned now: the ``passthrough`` columns of ``df``, then the model's outputs.
    ``settings``: where the registry is (default: the driver's ``MMSERVE_*`` environment)."""
    job = engines.plan(
        ref, settings or Settings(), passthrough, on_error, rejects, columns=df.columns
    )
    outputs = pa.schema([(f.name, _spark_arrow(f.type)) for f in job.outputs])
    job = dataclasses.replace(job, outputs=outputs)
    fields = [df.schema[name] for name in job.passthrough]
    fields += [StructField(f.name, from_arrow_type(f.type), nullable=True) for f in job.outputs]
    return df.mapInArrow(functools.partial(_partition, job), StructType(fields))


def _spark_arrow(t: pa.DataType) -> pa.DataType:
    """``t`` as Spark takes it from Arrow: a fixed-size list (an embedding of K values) as a
    list, which Spark reads as an array (it refuses fixed-size lists)."""
    return pa.list_(t.value_field) if pa.types.is_fixed_size_list(t) else t


def _partition(job: engines.Job, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One task's answers (it runs on an executor)."""
    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    where, name = f"Spark partition {partition}", f"part-{partition:05d}.parquet"
    return engines.score_batches(job, batches, where, name)
