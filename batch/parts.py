"""One partition of a batch input, scored into one output part.

- **Plan**: one partition per input file, or per range of row groups of a large parquet file;
  in a run over files that are no tables, ``partition_rows`` files, at most
  :data:`batch.files.PART_FILES` (:mod:`batch.files`).
- **Part**: a partition's rows, read as record batches (memory stays bounded whatever the
  input's size), scored, and written as ``part-NNNNN.<format>``, atomically, in input order;
  then ``_parts/part-NNNNN.json`` (rows, rejects, sha256). A part with its record is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batch import cells, files
from batch.cells import Unread
from batch.places import Roots
from batch.spec import BatchSpec, Format, InputFile, filesystem, input_files
from serving import tracing
from serving.codecs import csv_table, json_safe
from serving.errors import InputError, ObjectNotFound, UnreadableInput
from serving.predictor import Scorer
from serving.settings import Settings
from serving.store import Store

_COLUMN = re.compile(r"column #(\d+)")  # which column a CSV reader's error is about
_EXTENSIONS = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}
PART = "mmserve.batch.part"
REJECTED = "mmserve.batch.rejected"


class BadRow(InputError):
    def __init__(self, where: str, row: int, reason: str) -> None:
        super().__init__(f"{where} row {row}: {reason}")
        self.row = row


@dataclass(frozen=True)
class Partition:
    index: int
    file: InputFile
    row_groups: tuple[int, ...] | None = None  # None: the whole file
    files: tuple[InputFile, ...] = ()  # a run over files: each a row (``file`` is the first)

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
    writer: str = ""  # host:pid of the process that wrote it


def plan(spec: BatchSpec, settings: Settings, roots: Roots | None = None) -> list[Partition]:
    """The partitions of the input, in input order, from one bounded listing (``roots``: a
    confined run's, see :func:`batch.spec.input_files`)."""
    limit = settings.batch.max_input_files
    fs, found = input_files(spec.input, settings.aws, limit, roots)
    if files.over_files(found):
        size = min(spec.partition_rows, files.PART_FILES)
        chunks = [tuple(found[i : i + size]) for i in range(0, len(found), size)]
        return [Partition(i, chunk[0], None, chunk) for i, chunk in enumerate(chunks)]
    partitions: list[Partition] = []
    for file in found:
        groups: list[tuple[int, ...] | None] = [None]
        if file.format == "parquet":
            with fs.open_input_file(file.path) as f:
                try:
                    metadata = pq.ParquetFile(f).metadata
                except pa.ArrowException as err:
                    raise UnreadableInput(file.path, "parquet", 0) from err
                groups = _row_group_ranges(metadata, spec.partition_rows)
        for group in groups:
            partitions.append(Partition(len(partitions), file, group))
    return partitions


def plan_document(partitions: list[Partition]) -> dict[str, Any]:
    """The plan as JSON, for ``_run.json``: each file once, each partition by file index (a
    partition of a run over files: its first file's, no row groups, and how many files)."""
    inputs = list(dict.fromkeys(f for p in partitions for f in (p.files or [p.file])))
    index = {file: i for i, file in enumerate(inputs)}
    return {
        "files": [[f.path, f.format, *([f.name] if f.name else [])] for f in inputs],
        "partitions": [
            [index[p.file], p.row_groups, *([len(p.files)] if p.files else [])] for p in partitions
        ],
    }


def plan_of(document: dict[str, Any]) -> list[Partition]:
    """The partitions :func:`plan_document` recorded."""
    inputs = [InputFile(*fields) for fields in document["files"]]
    return [
        Partition(
            i,
            inputs[f],
            None if groups is None else tuple(groups),
            tuple(inputs[f : f + more[0]]) if more else (),
        )
        for i, (f, groups, *more) in enumerate(document["partitions"])
    ]


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
    spec: BatchSpec, partition: Partition, scorer: Scorer, out: Store, settings: Settings
) -> PartResult:
    """Score one partition with ``scorer`` (a model, or a chain of them) into its part (and
    its rejects), atomically; return its record. With tracing on, in a span of its own."""
    tracer = tracing.tracer(settings)
    if tracer is None:
        return _write_part(spec, partition, scorer, out, settings)
    attributes = {**tracing.pinned(scorer.ref), PART: partition.name}
    with tracer.start_as_current_span("batch part", attributes=attributes) as span:
        result = _write_part(spec, partition, scorer, out, settings)
        span.set_attributes({tracing.ROWS: result.rows, REJECTED: result.rejected})
        return result


def _write_part(
    spec: BatchSpec, partition: Partition, scorer: Scorer, out: Store, settings: Settings
) -> PartResult:
    started = time.perf_counter()
    fs, _ = filesystem(spec.input, settings.aws)
    rows = rejected = 0
    ext = _EXTENSIONS[spec.format]
    rejects: list[pa.Table] = []
    id_column = files.PATH if partition.files else spec.id_column
    with out.open_output(f"{partition.name}.{ext}") as raw:
        sink = _Hashing(raw)
        # Closed on a failure too: a parquet writer left open would close itself on exit.
        with contextlib.closing(_Writer(spec.format, sink)) as writer:
            offset = 0
            for piece in _rows_of(fs, partition, spec, scorer, settings):
                if isinstance(piece, Unread):  # a cell its column cannot hold, a file no row
                    table, scored, bad = piece.row, None, [(0, piece.reason)]
                else:
                    table = piece
                    kept = [files.PATH] if partition.files else spec.passthrough(table.column_names)
                    scored, bad = scorer.predict_valid(table, kept)
                if bad and spec.on_error == "fail":
                    raise _bad_row(partition, table, offset, *bad[0])
                if bad:
                    rejects.append(_rejects(table, bad, offset, id_column))
                if scored is not None:
                    if spec.files_out:
                        media = scorer.output_content_types.get(scorer.outputs[-1])
                        scored = files.written(out, scored, media)
                    writer.write(scored)
                    rows += scored.num_rows
                rejected += len(bad)
                offset += table.num_rows
    if rejects:
        _write_rejects(out, partition.name, pa.concat_tables(rejects))
    seconds = time.perf_counter() - started
    by = f"{socket.gethostname()}:{os.getpid()}"
    result = PartResult(partition.name, rows, rejected, sink.hash.hexdigest(), seconds, by)
    out.write(f"_parts/{partition.name}.json", json.dumps(asdict(result)).encode())
    return result  # done: the part, then its record


def _rows_of(
    fs: Any, partition: Partition, spec: BatchSpec, scorer: Scorer, settings: Settings
) -> Iterator[cells.Piece]:
    """The partition's rows: its files' (a run over files), or its table's."""
    if not partition.files:
        return _readable(fs, partition, spec.batch_rows, scorer)
    limit = settings.batch.max_file_bytes
    feature = scorer.inputs[0]
    return files.pieces(fs, partition.files, feature, spec.batch_rows, limit, spec.files_out)


def _bad_row(
    partition: Partition, table: pa.Table, offset: int, row: int, reason: str
) -> InputError:
    """The error of a bad row under ``--on-error fail``: naming its file, and its row in a
    table (a file that is no table is a row)."""
    if partition.files:
        return files.BadFile(table.column(files.PATH)[row].as_py(), reason)
    return BadRow(partition.file.path, offset + row, reason)


def read_batches(
    fs: Any, file: InputFile, batch_rows: int, scorer: Scorer, column_names: list[str] | None = None
) -> Iterator[pa.Table]:
    """A whole file's rows, a batch at a time, read as a partition's are (an async job's
    table); ``column_names`` name the columns of a CSV file without a header row. A cell its
    column's type cannot hold is an :class:`InputError` naming its row (not the file: an
    async job's is the store's); other errors are the readers' own."""
    rows = 0
    for piece in _pieces(fs, Partition(0, file), batch_rows, scorer, column_names):
        if isinstance(piece, Unread):
            raise InputError(f"{piece.reason} at row {rows}")
        rows += piece.num_rows
        yield piece


def _pieces(
    fs: Any,
    partition: Partition,
    batch_rows: int,
    scorer: Scorer,
    column_names: list[str] | None = None,
) -> Iterator[cells.Piece]:
    """The partition's rows, a batch at a time, in input order (streaming readers: memory is
    a batch, not the file); a row with a cell its column cannot hold, alone, as an
    :class:`Unread`. CSV columns the model (a chain: any step) takes from the input are
    read as its types."""
    path, fmt = partition.file.path, partition.file.format
    if fmt == "parquet":
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            groups = partition.row_groups or range(parquet.num_row_groups)
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=list(groups)):
                yield pa.Table.from_batches([batch])
    elif fmt == "csv":
        types = {field.name: field.type for field in scorer.inputs}
        opened = lambda: fs.open_input_stream(path)  # noqa: E731
        yield from cells.csv_pieces(opened, types, column_names or [], batch_rows)
    else:
        yield from cells.json_pieces(lambda: fs.open_input_stream(path), path, batch_rows)


def _readable(
    fs: Any, partition: Partition, batch_rows: int, scorer: Scorer
) -> Iterator[cells.Piece]:
    """:func:`_pieces`, a reader's failure turned into :class:`UnreadableInput`: the file,
    the rows read before it, the column if the reader says which; never the reader's
    message, which may quote the file's bytes."""
    pieces = _pieces(fs, partition, batch_rows, scorer)
    rows = 0
    while True:
        try:
            piece = next(pieces)
        except StopIteration:
            return
        except pa.ArrowException as err:
            column = _COLUMN.search(str(err))
            number = int(column.group(1)) + 1 if column else None
            raise UnreadableInput(partition.file.path, partition.file.format, rows, number) from err
        rows += 1 if isinstance(piece, Unread) else piece.num_rows
        yield piece


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
    """A part's rows onto ``sink`` as ``fmt``, its schema the first table's."""

    def __init__(self, fmt: Format, sink: _Hashing):
        self.fmt, self.sink = fmt, sink
        self.parquet: pq.ParquetWriter | None = None
        self.csv: pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            # No dictionary encoding: scores and ids rarely repeat, and it was half a part's time.
            self.parquet = self.parquet or pq.ParquetWriter(
                self.sink, table.schema, use_dictionary=False
            )
            self.parquet.write_table(table)
        elif self.fmt == "csv":
            table = csv_table(table)  # an embedding as K columns: see serving.codecs
            self.csv = self.csv or pacsv.CSVWriter(self.sink, table.schema)
            self.csv.write_table(table)
        else:
            lines = (json.dumps(row) + "\n" for row in json_safe(table).to_pylist())
            self.sink.write("".join(lines).encode())

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.csv is not None:
            self.csv.close()


def done_part(out: Store, name: str) -> PartResult | None:
    """The record of a part that is written; ``None`` if it is not (yet)."""
    try:
        return PartResult(**json.loads(out.read(f"_parts/{name}.json")))
    except ObjectNotFound:
        return None
