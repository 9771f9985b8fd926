"""The batch runner: plan -> partitions -> parts -> manifest.

- **Plan**: one partition per input file, or per range of row groups of a large parquet file.
- **Part**: a partition's rows, read as record batches (memory stays bounded whatever the
  input's size), scored, and written as ``part-NNNNN.<format>``, atomically, in input order;
  then ``_parts/part-NNNNN.json`` (rows, rejects, sha256). A part with its record is done.
- **Manifest**: ``_manifest.json``, written last: the model version, the spec, every part.

The run's identity (``_run.json``: id, spec, model version pinned at the start) is written
first; running it again resumes it: done parts are skipped, the others written, and the
output is the same as one uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from batch.spec import BatchSpec, Format, InputFile, filesystem, input_files
from serving.codecs import json_safe
from serving.errors import AlreadyExists, InputError, MMServeError, ObjectNotFound
from serving.predictor import Predictor
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store

RUN = "_run.json"
MANIFEST = "_manifest.json"
ERROR = "_error.json"  # why a run started elsewhere (API, schedule) stopped
_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


class BadRow(InputError):
    def __init__(self, where: str, row: int, reason: str) -> None:
        super().__init__(f"{where} row {row}: {reason}")
        self.row = row


class RunConflict(MMServeError):
    status = 409  # type: ignore[assignment]


@dataclass(frozen=True)
class Partition:
    index: int
    file: InputFile
    row_groups: tuple[int, ...] | None = None  # None: the whole file

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"


@dataclass(frozen=True)
class PartResult:
    name: str
    rows: int
    rejected: int
    sha256: str
    seconds: float


def plan(spec: BatchSpec, settings: Settings) -> list[Partition]:
    """The partitions of the input, in input order."""
    fs, files = input_files(spec.input, settings.aws)
    partitions: list[Partition] = []
    for file in files:
        groups: list[tuple[int, ...] | None] = [None]
        if file.format == "parquet":
            with fs.open_input_file(file.path) as f:
                groups = _row_group_ranges(pq.ParquetFile(f).metadata, spec.partition_rows)
        for group in groups:
            partitions.append(Partition(len(partitions), file, group))
    return partitions


def _row_group_ranges(metadata: Any, rows: int) -> list[tuple[int, ...] | None]:
    ranges: list[tuple[int, ...] | None] = []
    current: list[int] = []
    size = 0
    for i in range(metadata.num_row_groups):
        current.append(i)
        size += metadata.row_group(i).num_rows
        if size >= rows:
            ranges.append(tuple(current))
            current, size = [], 0
    if current or not ranges:
        ranges.append(tuple(current))
    return ranges if len(ranges) > 1 else [None]


# -- one part --------------------------------------------------------------------------------


def write_part(
    spec: BatchSpec, partition: Partition, predictor: Predictor, out: Store, settings: Settings
) -> PartResult:
    """Score one partition into its part (and its rejects), atomically; return its record."""
    started = time.perf_counter()
    fs, _ = filesystem(spec.input, settings.aws)
    rows = rejected = 0
    ext = _EXTENSIONS[spec.format]
    rejects: list[pa.Table] = []
    with out.open_output(f"{partition.name}.{ext}") as raw:
        sink = _Hashing(raw)
        writer: _Writer | None = None
        offset = 0
        for table in _batches(fs, partition, spec.batch_rows, predictor):
            scored, bad = _score(predictor, table, spec.passthrough(table.column_names))
            if bad and spec.on_error == "fail":
                row, reason = bad[0]
                raise BadRow(partition.file.path, offset + row, reason)
            if bad:
                rejects.append(_rejects(table, bad, offset, spec.id_column))
            writer = writer or _Writer(spec.format, sink, scored.schema)
            writer.write(scored)
            rows += scored.num_rows
            rejected += len(bad)
            offset += table.num_rows
        if writer is not None:
            writer.close()
    if rejects:
        _write_rejects(out, partition.name, pa.concat_tables(rejects))
    seconds = time.perf_counter() - started
    result = PartResult(partition.name, rows, rejected, sink.hash.hexdigest(), seconds)
    out.write(f"_parts/{partition.name}.json", json.dumps(asdict(result)).encode())
    return result  # done: the part, then its record


def _batches(
    fs: Any, partition: Partition, batch_rows: int, predictor: Predictor
) -> Iterator[pa.Table]:
    """The partition's rows, a batch at a time, in input order (streaming readers: memory is
    a batch, not the file). CSV columns the model takes are read as its types."""
    path, fmt = partition.file.path, partition.file.format
    if fmt == "parquet":
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            groups = partition.row_groups or range(parquet.num_row_groups)
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=list(groups)):
                yield pa.Table.from_batches([batch])
        return
    with fs.open_input_stream(path) as f:
        if fmt == "csv":
            types = {field.name: field.type for field in predictor.version.inputs}
            reader = pacsv.open_csv(f, convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            reader = pajson.open_json(f)
        for batch in reader:
            yield from _split(pa.Table.from_batches([batch]), batch_rows)


def _split(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def _score(
    predictor: Predictor, table: pa.Table, passthrough: list[str]
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The scored rows and the bad ones (row within ``table``, reason). A batch with a bad row
    is halved until the bad rows stand alone: a few bad rows cost a few extra calls, and a
    row's answer does not depend on the batch it is scored in."""
    try:
        return predictor.predict(table, passthrough), []
    except InputError as err:
        if table.num_rows <= 1:
            return predictor.predict(table.slice(0, 0), passthrough), [(0, err.message)]
    half = table.num_rows // 2
    left, left_bad = _score(predictor, table.slice(0, half), passthrough)
    right, right_bad = _score(predictor, table.slice(half), passthrough)
    bad = left_bad + [(row + half, reason) for row, reason in right_bad]
    return pa.concat_tables([left, right]), bad


def _rejects(
    table: pa.Table, bad: list[tuple[int, str]], offset: int, id_column: str | None
) -> pa.Table:
    rows = [row for row, _ in bad]
    columns: dict[str, Any] = {"row": pa.array([offset + r for r in rows], pa.int64())}
    if id_column and id_column in table.column_names:
        columns[id_column] = table.column(id_column).take(rows)
    columns["reason"] = pa.array([reason for _, reason in bad], pa.string())
    return pa.table(columns)


def _write_rejects(out: Store, name: str, rejects: pa.Table) -> None:
    with out.open_output(f"_rejects/{name}.parquet") as raw:
        pq.write_table(rejects, raw)


class _Hashing:
    """A file-like that forwards writes and hashes them (a part's sha256 without a re-read)."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.raw.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True  # the store closes (and publishes) the real stream


class _Writer:
    def __init__(self, fmt: Format, sink: _Hashing, schema: pa.Schema):
        self.fmt, self.sink = fmt, sink
        # No dictionary encoding: scores and ids rarely repeat, and it was half a part's time.
        self.parquet = (
            pq.ParquetWriter(sink, schema, use_dictionary=False) if fmt == "parquet" else None
        )
        self.csv = pacsv.CSVWriter(sink, schema) if fmt == "csv" else None

    def write(self, table: pa.Table) -> None:
        if self.parquet is not None:
            self.parquet.write_table(table)
        elif self.csv is not None:
            self.csv.write_table(table)
        else:
            lines = (json.dumps(row) + "\n" for row in json_safe(table).to_pylist())
            self.sink.write("".join(lines).encode())

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.csv is not None:
            self.csv.close()


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    run_id: str
    spec: BatchSpec
    model: str  # name:version, pinned
    out: Store


def start(
    spec: BatchSpec, registry: Registry, settings: Settings, run_id: str | None, resume: bool
) -> Run:
    """The run writing to ``spec.output``: resumed if its ``_run.json`` is there (with the same
    spec), else a new one with the model version pinned now."""
    out = Store.from_url(spec.output, settings.aws)
    try:
        record = json.loads(out.read(RUN))
    except ObjectNotFound:
        record = None
    if record is not None:
        if not resume and record["run_id"] != run_id:
            raise RunConflict(
                f"{spec.output} holds run {record['run_id']}: resume it (--resume or its "
                "run id) or write to another output"
            )
        if BatchSpec.model_validate(record["spec"]) != spec:
            raise RunConflict(f"run {record['run_id']} was started with another spec")
        return Run(record["run_id"], spec, record["model"], out)
    name, version = registry.resolve(spec.model)
    run = Run(run_id or uuid.uuid4().hex, spec, f"{name}:{version}", out)
    document = {
        "run_id": run.run_id,
        "model": run.model,
        "spec": spec.model_dump(),
        "started": _now(),
    }
    try:
        out.create(RUN, json.dumps(document, indent=1).encode())
    except AlreadyExists:  # a concurrent start: take that one
        return start(spec, registry, settings, None, True)
    registry.store.write(f"batch/{run.run_id}.json", json.dumps({"output": spec.output}).encode())
    return run


def run_batch(
    spec: BatchSpec,
    registry: Registry,
    settings: Settings,
    *,
    run_id: str | None = None,
    resume: bool = False,
    workers: int = 1,
    distributed: bool = False,
    on_plan: Callable[[Run, int, int], None] | None = None,
    on_part: Callable[[PartResult], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the batch; returns the manifest once every part is written."""
    started = time.perf_counter()
    run = start(spec, registry, settings, run_id, resume)
    run.out.delete(ERROR)
    partitions = plan(spec, settings)
    done = {p.name: r for p in partitions if (r := done_part(run.out, p.name)) is not None}
    todo = [p for p in partitions if p.name not in done]
    if on_plan is not None:
        on_plan(run, len(partitions), len(done))
    for result in _execute(run, todo, registry, settings, workers, distributed):
        done[result.name] = result
        if on_part is not None:
            on_part(result)
    parts = [done[p.name] for p in partitions]
    manifest = {
        "run_id": run.run_id,
        "model": run.model,
        "spec": spec.model_dump(),
        "parts": [asdict(p) for p in parts],
        "rows": sum(p.rows for p in parts),
        "rejected": sum(p.rejected for p in parts),
        "finished": _now(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    run.out.write(MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def done_part(out: Store, name: str) -> PartResult | None:
    """The record of a part that is written; ``None`` if it is not (yet)."""
    try:
        return PartResult(**json.loads(out.read(f"_parts/{name}.json")))
    except ObjectNotFound:
        return None


def _execute(
    run: Run,
    todo: list[Partition],
    registry: Registry,
    settings: Settings,
    workers: int,
    distributed: bool,
) -> Iterator[PartResult]:
    if distributed:
        from batch.distributed import execute

        yield from execute(run, todo, settings)
        return
    if workers <= 1 or len(todo) <= 1:
        predictor = registry.load(run.model)
        for partition in todo:
            yield write_part(run.spec, partition, predictor, run.out, settings)
        return
    # spawn: a fork would copy this process's pyarrow and BLAS threads mid-state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        spec = run.spec.model_dump_json()
        futures = [pool.submit(_part_in_worker, spec, run.model, p) for p in todo]
        for future in futures:  # in order: parts complete in input order
            yield future.result()


def _part_in_worker(spec_json: str, model: str, partition: Partition) -> PartResult:
    spec = BatchSpec.model_validate_json(spec_json)
    settings = _settings()
    out = Store.from_url(spec.output, settings.aws)
    return write_part(spec, partition, _predictor(model), out, settings)


@functools.cache
def _settings() -> Settings:
    return Settings()


@functools.cache
def _predictor(model: str) -> Predictor:
    return Registry.from_settings(_settings()).load(model)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def status(registry: Registry, settings: Settings, run_id: str) -> dict[str, Any]:
    """A run's progress, from its output alone: parts done of all, rows, rejects."""
    if not run_id.isalnum():
        raise ObjectNotFound(f"batch/{run_id}.json")
    output = json.loads(registry.store.read(f"batch/{run_id}.json"))["output"]
    out = Store.from_url(output, settings.aws)
    record = json.loads(out.read(RUN))
    parts = [
        PartResult(**json.loads(out.read(f"_parts/{name}")))
        for name in out.list("_parts")
        if name.endswith(".json")
    ]
    try:
        manifest = json.loads(out.read(MANIFEST))
    except ObjectNotFound:
        manifest = None
    total = len(plan(BatchSpec.model_validate(record["spec"]), settings))
    try:
        error = json.loads(out.read(ERROR))
    except ObjectNotFound:
        error = None
    state = "succeeded" if manifest else "failed" if error else "running"
    return {
        "run_id": run_id,
        "status": state,
        "error": error,
        "model": record["model"],
        "output": output,
        "started": record["started"],
        "finished": manifest["finished"] if manifest else None,
        "parts_done": len(parts),
        "parts": total,
        "rows": sum(p.rows for p in parts),
        "rejected": sum(p.rejected for p in parts),
    }
