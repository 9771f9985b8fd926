"""Scoring inside the engines data teams already run (Spark, Ray Data), by the one predict path.

An engine hands mmserve Arrow batches on machines mmserve did not start. What every task
needs is made once, on the driver, by :func:`plan`, and shipped with the job as plain
picklable data (a :class:`Job`):

- the model reference pinned (``churn@production`` -> ``churn:3``; each step of a chain):
  an alias moved while the job runs changes nothing, every task scores the version the
  driver saw, as a batch run does;
- where the registry is (:class:`Source`: the store URL made absolute, the S3 endpoint and
  credentials, the trust policy), from the driver's settings: an executor's environment may
  say nothing, or something else;
- the answer's columns and types, from the registry's metadata (no model loaded, no sample
  scored): the passthrough columns first, then the model's outputs (a chain's last step's).

A task loads the model once per process (:func:`scorer`; the registry's load checks the
artifact's sha256) and scores each batch as a batch run's part does (:func:`score`:
``predict_valid``, then the ``on_error`` policy), so a row gets the same answer, bit for bit,
as from ``mmserve batch run``. Rows set aside under ``skip`` go to parquet files under the
job's ``rejects`` URL, a file per task. Nothing here imports an engine: :mod:`batch.spark`
and :mod:`batch.ray` do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.parquet as pq

from batch.parts import BadRow
from serving import scorers
from serving.cache import ModelCache
from serving.errors import MissingColumn, ModelError
from serving.predictor import Scorer, output_type
from serving.registry import Registry
from serving.settings import AwsSettings, CacheSettings, RegistrySettings, Settings
from serving.store import Store

OnError = Literal["fail", "skip"]
REJECT_COLUMNS = ("row", "reason")
"""A reject's columns after the job's passthrough columns: its row in the task's input, why."""


@dataclass(frozen=True)
class Source:
    """Where a task finds the registry: the part of the driver's settings it needs (no API
    key or admin token travels with the job)."""

    store_url: str
    aws: AwsSettings
    registry: RegistrySettings
    cache: CacheSettings

    @classmethod
    def of(cls, settings: Settings) -> Source:
        """The registry ``settings`` name; a local store's path made absolute (an executor's
        working directory is not the driver's)."""
        store = Store.from_url(settings.store_url, settings.aws)
        root = store.root_uri
        if store.is_local:  # its path: Store.from_url takes a file URI's path as it is spelt
            root = url2pathname(urlparse(root).path)
        return cls(root, settings.aws, settings.registry, settings.cache)

    def open(self) -> Registry:
        cache = ModelCache(self.cache.max_models, int(self.cache.max_memory_mb * 2**20))
        return Registry(Store.from_url(self.store_url, self.aws), self.registry, cache)


@dataclass(frozen=True)
class Job:
    """What every task of one scoring job needs, made on the driver by :func:`plan`."""

    model: str
    """The pinned reference: ``churn:3``, a chain's ``prep:1,churn:3``."""
    source: Source
    passthrough: tuple[str, ...]
    outputs: pa.Schema
    """The model's answer columns and their types, after the passthrough columns."""
    on_error: OnError = "fail"
    rejects: str | None = None
    """The folder (a path or ``s3://...``) rows set aside under ``skip`` are written to."""


def plan(
    ref: str,
    settings: Settings,
    passthrough: Sequence[str] = (),
    on_error: OnError = "fail",
    rejects: str | None = None,
    columns: Sequence[str] | None = None,
) -> Job:
    """The job scoring ``ref`` (a model or a chain), pinned now. ``columns``: the input's, when
    the engine knows them before any batch (a passthrough column must be one of them).
    ``skip`` needs ``rejects``: a row is never dropped without a trace."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
    if on_error == "skip" and rejects is None:
        raise ValueError(
            "on_error='skip' needs rejects=<folder or s3:// URL> for the rows set aside"
        )
    kept = tuple(passthrough)
    for name in kept:
        if columns is not None and name not in columns:
            raise MissingColumn(name)
    source = Source.of(settings)
    registry = source.open()
    model = scorers.pin(registry, ref)
    last = registry.get(scorers.steps(model)[-1])  # metadata only: nothing is loaded here
    clashes = [name for name in kept if name in (*last.outputs, *REJECT_COLUMNS)]
    if clashes:
        raise ValueError(f"passthrough column {clashes[0]!r} is also an answer or reject column")
    outputs = pa.schema([(name, output_type(last, name)) for name in last.outputs])
    return Job(model, source, kept, outputs, on_error, rejects)


_loaded: dict[tuple[str, str, str], Scorer] = {}  # this process's models, by source and ref
_MAX_LOADED = 4


def scorer(job: Job) -> Scorer:
    """The job's model (a chain: its pipeline), loaded once per process and kept for the
    process's next tasks (an engine reuses its Python workers)."""
    source = job.source
    key = (source.store_url, source.registry.model_dump_json(), job.model)
    if key not in _loaded:
        if len(_loaded) >= _MAX_LOADED:
            _loaded.clear()
        _loaded[key] = scorers.load(source.open(), job.model)
    return _loaded[key]


def score(
    job: Job, model: Scorer, table: pa.Table, where: str, offset: int = 0
) -> tuple[pa.Table, pa.Table | None]:
    """One batch of a task, scored as a batch run's part is: the answers (passthrough columns
    first, typed as the job's schema says) and the rows set aside under ``skip``, or ``None``.
    Under ``fail`` a bad row raises :class:`~batch.parts.BadRow` naming ``where`` (the task),
    its row there (``offset`` rows came before this batch) and the reason."""
    missing = [name for name in job.passthrough if name not in table.column_names]
    if missing:  # a job's mistake, not a bad row: every row would be set aside for it
        raise MissingColumn(missing[0])
    scored, bad = model.predict_valid(table, job.passthrough)
    if bad and job.on_error == "fail":
        raise _bad_row(job, table, where, offset, *bad[0])
    rejects = _rejects(job, table, bad, offset) if bad else None
    return _typed(job, scored), rejects


def score_batches(
    job: Job, batches: Iterable[pa.RecordBatch], where: str, rejects_name: str
) -> Iterator[pa.RecordBatch]:
    """A task's answers to its input ``batches`` (one engine task: a Spark partition), a batch
    at a time; its rejects, if any, written at its end as ``rejects_name`` under the job's
    rejects folder (a task run again writes the same file again)."""
    model = scorer(job)
    offset = 0
    rejected: list[pa.Table] = []
    for batch in batches:
        scored, rejects = score(job, model, pa.Table.from_batches([batch]), where, offset)
        if rejects is not None:
            rejected.append(rejects)
        offset += batch.num_rows
        yield from scored.combine_chunks().to_batches()
    if rejected:
        write_rejects(job, rejects_name, pa.concat_tables(rejected))


def write_rejects(job: Job, name: str, rejects: pa.Table) -> None:
    """``rejects`` as the parquet file ``name`` under the job's rejects folder, atomically."""
    assert job.rejects is not None  # plan() refuses skip without it
    out = Store.from_url(job.rejects, job.source.aws)
    with out.open_output(name) as raw:
        pq.write_table(rejects, raw)


def _typed(job: Job, scored: pa.Table) -> pa.Table:
    """``scored`` with its answer columns of the job's types (as recorded: a label's loaded
    classes may be a narrower integer than JSON kept); a value the type cannot hold is the
    model's failure, never a changed answer."""
    start = len(job.passthrough)
    for i, field in enumerate(job.outputs, start):
        column = scored.column(i)
        if column.type != field.type:
            try:
                scored = scored.set_column(i, field.name, column.cast(field.type, safe=True))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ModelError(job.model, err) from err
    return scored


def _rejects(job: Job, table: pa.Table, bad: list[tuple[int, str]], offset: int) -> pa.Table:
    rows = [row for row, _ in bad]
    columns: dict[str, Any] = {name: table.column(name).take(rows) for name in job.passthrough}
    columns["row"] = pa.array([offset + row for row in rows], pa.int64())
    columns["reason"] = pa.array([reason for _, reason in bad], pa.string())
    return pa.table(columns)


def _bad_row(job: Job, table: pa.Table, where: str, offset: int, row: int, reason: str) -> BadRow:
    """A batch run's error for a bad row, with the row's first passthrough value (its id,
    usually): a task's row number alone finds no row in an engine's shuffled data."""
    if job.passthrough:
        name = job.passthrough[0]
        reason = f"{reason} ({name}={table.column(name)[row].as_py()!r})"
    return BadRow(where, offset + row, reason)
