"""Batch runs over files that are no tables (issue 19): images, scans, documents, texts.

A batch input whose files all have a suffix that is no table format (``scans/*.png``, a
folder of PDFs, an ``s3://`` prefix of them) is a run over files, for a model whose one input
takes a file as a raw body on ``/invocations`` does: binary (or string, for ``text/*``) of
the declared media type. Each file is one row: ``path`` (the file's path relative to the
input's folder: the id column), then that input holding the file's bytes (or its text).

- **Bad rows.** A file whose media type (by suffix) is not the input's declared one, a file
  past ``MMSERVE_BATCH__MAX_FILE_BYTES`` (256 MB), a text that is not UTF-8 or a file the
  model refuses is a bad row named by its path: ``--on-error fail`` stops the run naming it,
  ``skip`` sets it aside in ``_rejects/`` (``row``, ``path``, ``reason``).
- **Memory.** Files are read one at a time into a model call of at most ``batch_rows`` files
  and at most ``max_file_bytes`` bytes of them (or one file): never all at once.
- **Parts.** ``partition_rows`` files a partition (at most :data:`PART_FILES`, so that a
  distributed run spreads a folder over the workers), in path order, planned from the one
  listing made at the start; resumed and distributed as any run's.
- **Files out** (``files_out``). A model whose one output is binary writes each file's answer
  as ``<path>.out`` under the output folder (SageMaker Batch Transform's names); the parts
  list ``path`` and ``output``, the name written.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from batch.cells import Piece, Unread
from batch.spec import FILE, BatchSpec, InputFile
from serving.codecs import raw
from serving.endpoints.pipeline import inputs_of
from serving.errors import InputError, InvalidName, UnsupportedFormat
from serving.metadata import Feature, ModelVersion, arrow_type
from serving.store import Store, validate_key

PATH = "path"
"""The id column of a run over files: each file's path relative to the input's folder."""
OUTPUT = "output"
"""With ``files_out``, the column naming the file each answer was written to."""
SUFFIX = ".out"
PART_FILES = 1000
"""Most files a partition holds: ``partition_rows`` (a million) would make one part, and one
task, of any folder."""


class BadFile(InputError):
    """An input file that cannot be a row (under ``--on-error fail``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"input file {path}: {reason}")
        self.path, self.reason = path, reason


class FilesRefused(InputError):
    """A run over files (or ``files_out``) its model or spec cannot do; refused at start."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot run over files: {reason}")
        self.reason = reason


def over_files(files: Sequence[InputFile]) -> bool:
    return any(file.format == FILE for file in files)


def check(
    spec: BatchSpec, files: Sequence[InputFile], model: str, steps: list[ModelVersion]
) -> None:
    """Refuse, before anything is written, a run over ``files`` that the model ``model``
    (its ``steps``' metadata) cannot score, or ``files_out`` it cannot write."""
    if not over_files(files):
        if spec.files_out:
            raise FilesRefused(f"files_out writes a file per input file; {spec.input} holds tables")
        return
    inputs = inputs_of(steps)
    if not raw.accepted(inputs):
        names = ", ".join(f"{f.name} ({f.dtype})" for f in inputs)
        raise FilesRefused(
            f"{files[0].name} is no table, and {model} takes {names}: a run over files needs "
            "a model whose one input is binary (or string, for text/*)"
        )
    if inputs[0].name == PATH:
        raise FilesRefused(f"{model}'s input is named {PATH!r}, the id column of a run over files")
    if spec.id_column not in (None, PATH) or spec.keep_columns or spec.join_input:
        raise FilesRefused(f"its rows keep only {PATH!r}: no id_column, keep_columns or join_input")
    outputs = steps[-1].outputs
    if spec.files_out and not (len(outputs) == 1 and _binary(steps[-1], outputs[0])):
        raise FilesRefused(
            f"files_out needs a model whose one output is binary; {model} answers "
            + ", ".join(outputs)
        )


def pieces(
    fs: Any,
    files: Sequence[InputFile],
    feature: Feature,
    batch_rows: int,
    max_bytes: int,
    files_out: bool,
) -> Iterator[Piece]:
    """The rows of ``files``, in order: tables of ``path`` and ``feature`` holding at most
    ``batch_rows`` files and ``max_bytes`` bytes (or one file), each file read as the call
    fills; a file that cannot be a row comes alone as an :class:`Unread` saying why."""
    names: list[str] = []
    values: list[bytes | str] = []
    size = 0
    for file in files:
        with fs.open_input_file(file.path) as f:
            length = f.size()
            reason = _refused(file.name, feature, files_out) or _too_big(length, max_bytes)
            if reason is None and names and (len(names) >= batch_rows or size + length > max_bytes):
                yield _rows(names, values, feature)  # before the next file is read: bounded
                names, values, size = [], [], 0
            data = f.read() if reason is None else b""
        value, reason = _value(data, feature) if reason is None else (b"", reason)
        if reason is not None:
            if names:
                yield _rows(names, values, feature)
                names, values, size = [], [], 0
            yield Unread(reason, pa.table({PATH: pa.array([file.name], pa.string())}))
            continue
        names.append(file.name)
        values.append(value)
        size += length
    if names:
        yield _rows(names, values, feature)


def written(out: Store, scored: pa.Table, media: str | None) -> pa.Table:
    """``files_out``: each row's answer (``scored``'s last column, binary) written as
    ``<path>.out`` under ``out``; the rows as ``path`` and ``output`` (null: no answer)."""
    answers = scored.column(scored.num_columns - 1)
    paths = scored.column(PATH).to_pylist()
    keys: list[str | None] = []
    for i, path in enumerate(paths):
        data = answers[i].as_py()  # one file's bytes at a time, not a list of them all
        keys.append(None if data is None else path + SUFFIX)
        if data is not None:
            out.write(path + SUFFIX, data, content_type=media)
    return pa.table({PATH: pa.array(paths, pa.string()), OUTPUT: pa.array(keys, pa.string())})


def _refused(name: str, feature: Feature, files_out: bool) -> str | None:
    """Why the file ``name`` cannot be a row before it is read: its media type (by suffix)
    is not the input's, or (``files_out``) its answer's name is no key of the output."""
    media = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    try:
        raw.check(media, [feature])
    except UnsupportedFormat:
        return f"its media type {media} is not {' or '.join(raw.accepted([feature]))}"
    if files_out:
        try:
            validate_key(name + SUFFIX)  # no '..': the answer stays in the output folder
        except InvalidName:
            return f"{name + SUFFIX!r} cannot be an output name (letters, digits and ._=@+-)"
    return None


def _too_big(length: int, max_bytes: int) -> str | None:
    if length <= max_bytes:
        return None
    return f"it is {length} bytes, past {max_bytes} (MMSERVE_BATCH__MAX_FILE_BYTES)"


def _value(data: bytes, feature: Feature) -> tuple[bytes | str, str | None]:
    """The file's cell (:func:`serving.codecs.raw.cell`), or why it cannot be one."""
    try:
        return raw.cell(data, feature), None
    except ValueError as err:
        return b"", str(err)


def _rows(names: list[str], values: list[bytes | str], feature: Feature) -> pa.Table:
    return pa.table(
        {PATH: pa.array(names, pa.string()), feature.name: pa.array(values, feature.type)}
    )


def _binary(version: ModelVersion, output: str) -> bool:
    return raw.is_binary(arrow_type(version.output_types.get(output, "double")))
