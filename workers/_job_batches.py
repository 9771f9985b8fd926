"""An async job on a table, scored as a batch run scores a partition.

A job whose input is CSV, JSON lines (an object a line), parquet or an Arrow stream is read
from the store ``jobs.batch_rows`` rows at a time by the batch runner's readers
(:func:`batch.parts.read_batches`; Arrow, which batch runs do not take, here); each batch
goes through the one predict path and its answer is encoded onto the job's output as it
comes. So a job's memory is a batch's, whatever the size of its input; the output is still
created exclusively, and appears only once its last batch is written.

The answer is the whole-input path's, byte for byte: a row's answer does not depend on its
batch; CSV and JSON lines answers are the batches' encodings one after the other (a CSV
answer's header row first, unless its input is CSV without one), a JSON
answer's rows one list, a parquet answer cut into the row groups ``pq.write_table`` cuts the
whole table into. An Arrow answer is the same table, in a record batch per batch read. A
bad row fails the job naming its row in the whole input.

Other inputs take the whole-input path: a JSON document, JSON lines of positional rows, an
empty body, a start it refuses (its errors name what is wrong, as they always did).

Either way the answer is a batch run's: the id and kept columns the job names
(:attr:`Job.passthrough`) first, copied as read, then the model's outputs; a CSV answer has
its header row, unless the input is CSV without one (SageMaker's way: values in, values out,
as ``/invocations`` answers).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Generator, Iterator
from typing import Any, cast

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from batch.parts import read_batches
from batch.spec import Format, InputFile
from serving import codecs, tracing
from serving.codecs import sagemaker
from serving.errors import MMServeError, NullValue
from serving.predictor import Scorer
from serving.store import Store
from workers.jobs import Job

_FORMATS: dict[str, Format] = {codecs.CSV: "csv", codecs.JSONL: "jsonl", codecs.PARQUET: "parquet"}
_HEAD_CHUNK = 1 << 16
_PRINTABLE = re.compile(rb"[\x20-\x7e\t]+")
ROW_GROUP = 1024 * 1024
"""Rows of a parquet answer's row groups: pyarrow's default, into which ``pq.write_table``
(the whole-input path) cuts a table."""


def score(store: Store, job: Job, scorer: Scorer, batch_rows: int) -> bool:
    """Score ``job``'s input a batch at a time into its output, created exclusively
    (:class:`AlreadyExists` if an earlier run wrote it). ``False``, having written nothing,
    if its input is not a table read in batches (or has no rows)."""
    read = _tables(store, job, scorer, batch_rows)
    if read is None:
        return False
    tables, header = read
    with contextlib.closing(tables):
        first = next(tables, None)
        if first is None:  # no rows: the whole-input path checks its columns, and it is small
            return False
        with store.open_output(job.output_key, exclusive=True, content_type=job.accept) as out:
            answers = Answers(job.accept, out, header)
            offset = 0
            for table in itertools.chain([first], tables):
                answers.write(_predict(scorer, table, offset, job.passthrough))
                offset += table.num_rows
            answers.close()
    tracing.note_rows(offset)
    return True


def headerless(head: bytes, kind: str, features: list[str]) -> bool:
    """Whether the input (its first line in ``head``) is CSV starting with a row of values,
    not a header row: its first line decoded as the whole-input path decodes a body (a
    header row gives no rows). Raises that decoder's error for a first line it refuses."""
    if kind != codecs.CSV:
        return False
    line = head[: head.find(b"\n") + 1] or head
    if _plain_values(line.strip(), features):
        return True  # what the decoder answers for it, without its ~0.4 ms per call
    probe = sagemaker.decode(line, kind, features)
    return isinstance(probe, pa.Table) and probe.num_rows > 0


def _plain_values(line: bytes, features: list[str]) -> bool:
    """Whether ``line`` is plainly a row of values the decoder reads as one row: printable
    ASCII without quotes or carriage returns, naming no feature, one cell per feature (with
    names given and nothing quoted, the CSV reader cannot fail on it). ``False`` leaves the
    question to the decoder."""
    if not _PRINTABLE.fullmatch(line) or b'"' in line:
        return False
    cells = line.decode().split(",")
    return len(cells) == len(features) and not {c.strip() for c in cells} & set(features)


def encode(table: pa.Table, kind: str, header: bool) -> bytes:
    """``table`` as ``kind``, as SageMaker's codec encodes it; CSV with its header row
    when ``header``."""
    if kind == codecs.CSV and header:
        return codecs.encode(table, codecs.CSV)
    return sagemaker.encode(table, kind)


def _tables(
    store: Store, job: Job, scorer: Scorer, batch_rows: int
) -> tuple[Generator[pa.Table, None, None], bool] | None:
    """The input's rows in batches, and whether a CSV answer has a header row; ``None``
    for the whole-input path."""
    kind = job.content_type
    if kind not in _FORMATS and kind != codecs.ARROW:
        return None
    head = _head(store, job.input_key, lines=kind in (codecs.CSV, codecs.JSONL))
    if not head.strip():
        return None  # empty: the whole-input path says so
    names: list[str] | None = None
    if kind == codecs.CSV:
        features = [f.name for f in scorer.inputs]
        try:  # a row of values first: a body without a header (SageMaker's way)
            names = features if headerless(head, kind, features) else None
        except MMServeError:
            return None
    elif kind == codecs.JSONL and not head.lstrip().startswith(b"{"):
        return None  # positional rows, or not an object a line
    return _decoded(store, job.input_key, kind, scorer, batch_rows, names), names is None


def _head(store: Store, key: str, lines: bool) -> bytes:
    """The object's first chunk; with ``lines``, up to the end of its first line at least."""
    head = b""
    chunks = cast(Generator[bytes, None, None], store.stream(key, _HEAD_CHUNK))
    with contextlib.closing(chunks):
        for chunk in chunks:
            head += chunk
            if not lines or b"\n" in chunk:
                break
    return head


def _decoded(
    store: Store, key: str, kind: str, scorer: Scorer, batch_rows: int, names: list[str] | None
) -> Generator[pa.Table, None, None]:
    """The batches of ``key``; a reader's failure is the whole-input path's DecodeError."""
    path = store.path(key)
    if kind == codecs.ARROW:
        tables = _arrow(store, path, batch_rows)
    else:
        file = InputFile(path, _FORMATS[kind])
        tables = read_batches(store.filesystem, file, batch_rows, scorer, names)
    try:
        yield from tables
    except OSError as err:  # a cut or corrupt body, or a store that went away
        store.exists(key)  # StoreUnavailable (retried) if the store is away
        raise codecs.DecodeError(kind, codecs.reason(err)) from None
    except (pa.ArrowException, ValueError, TypeError) as err:
        raise codecs.DecodeError(kind, codecs.reason(err)) from None


def _arrow(store: Store, path: str, batch_rows: int) -> Iterator[pa.Table]:
    with store.filesystem.open_input_stream(path) as f:
        for batch in ipc.open_stream(f):
            for start in range(0, batch.num_rows, batch_rows):
                yield pa.Table.from_batches([batch.slice(start, batch_rows)])


def _predict(scorer: Scorer, table: pa.Table, offset: int, passthrough: list[str]) -> pa.Table:
    """The batch's answer (behind its ``passthrough`` columns); a row an input error names
    is numbered in the whole input."""
    try:
        return scorer.predict(table, passthrough)
    except NullValue as err:
        suffix = f" at row {err.row}"
        if offset and err.message.endswith(suffix):  # a chain's step prefixes its message
            err.row += offset
            err.message = err.message.removesuffix(suffix) + f" at row {err.row}"
            err.args = (err.message,)
        raise


class Answers:
    """Answers encoded as ``kind`` onto ``out`` a batch at a time: the bytes :func:`encode`
    makes of all of them at once (Arrow: the same table); a CSV header row, with ``header``,
    once, first."""

    def __init__(self, kind: str, out: Any, header: bool = False):
        self.kind, self.out, self.header = kind, out, header
        self.rows = 0
        self.writer: Any = None
        self.pending: list[pa.Table] = []  # a parquet row group's rows, until it is full
        if kind == codecs.JSON:
            out.write(b'{"predictions": [')

    def write(self, table: pa.Table) -> None:
        if self.kind == codecs.JSON:
            rows = codecs.json_safe(table).to_pylist()
            text = ", ".join(json.dumps(row) for row in rows)
            self.out.write(((", " if self.rows and rows else "") + text).encode())
        elif self.kind == codecs.PARQUET:
            self.writer = self.writer or pq.ParquetWriter(self.out, table.schema)
            self.pending.append(table)
            self._row_groups(full_only=True)
        elif self.kind == codecs.ARROW:
            self.writer = self.writer or ipc.new_stream(self.out, table.schema)
            self.writer.write_table(table)
        else:  # CSV, JSON lines: the batches' encodings one after the other
            self.out.write(encode(table, self.kind, self.header))
            self.header = False
        self.rows += table.num_rows

    def close(self) -> None:
        if self.kind == codecs.JSON:
            self.out.write(b"]}")
        elif self.kind == codecs.PARQUET:
            self._row_groups(full_only=False)
        if self.writer is not None:
            self.writer.close()

    def _row_groups(self, full_only: bool) -> None:
        """Write the pending rows' full row groups (and, at the end, the rest), each one
        chunk as the whole answer's would be: pages are cut by the chunks written."""
        pending = sum(t.num_rows for t in self.pending)
        whole = pending - pending % ROW_GROUP if full_only else pending
        if whole == 0 and (full_only or self.rows > pending):
            return
        rows = pa.concat_tables(self.pending).combine_chunks()
        self.writer.write_table(rows.slice(0, whole))
        self.pending = [rows.slice(whole)]
