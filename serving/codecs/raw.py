"""Bodies that are no table: a file (an image, a scan, a document) or a text, sent as it is
(``curl --data-binary @seven.png -H 'content-type: image/png'``).

A model whose one input is binary (or string) takes such a body as its one row: :func:`table`
makes that row, or refuses it (415) naming the media types the model takes. A model whose
one output is binary, with a declared media type, answers one row with that output's bytes
as the body (:func:`answer`) when the client accepts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from serving.codecs import MEDIA_TYPES, DecodeError
from serving.errors import UnsupportedFormat
from serving.metadata import Feature

# A media type or range: image/png, image/*, text/plain (RFC 6838's characters, lower case).
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(?:\*|[a-z0-9][a-z0-9!#$&^_.+-]*)")


@dataclass(frozen=True, slots=True)
class Raw:
    """A request body of a media type that is no table format: its bytes, or (an async
    job's input, downloaded) the local file holding them, read only if the model takes
    bytes rather than a path (``Feature.path``)."""

    data: bytes
    media_type: str
    path: Path | None = None

    def content(self) -> bytes:
        return self.path.read_bytes() if self.path is not None else self.data


def content_type(header: str | None, default: str, tables: list[str]) -> str:
    """The media type a Content-Type header names (``default`` if none or ``*/*``): one of
    the route's table formats ``tables``, or any other well-formed one, for a raw body."""
    value = (header or "").split(";")[0].strip().lower()
    if value in ("", "*/*"):
        return default
    if value not in tables and not MEDIA_TYPE.fullmatch(value):
        raise UnsupportedFormat(value, [*tables, "a file's media type (image/png...)"])
    return value


def table(raw: Raw, inputs: list[Feature]) -> pa.Table:
    """The one-row table of ``raw`` for a model of ``inputs``: its one binary input holds
    the bytes, its one string input the text (UTF-8); any other model refuses it (415)."""
    check(raw.media_type, inputs)
    data = raw.content()
    if not data:
        raise DecodeError(raw.media_type, "the body is empty")
    feature = inputs[0]
    try:
        value = cell(data, feature)
    except ValueError as err:
        raise DecodeError(raw.media_type, str(err)) from None
    return pa.table({feature.name: pa.array([value], feature.type)})


def cell(data: bytes, feature: Feature) -> bytes | str:
    """A file's value for ``feature``: its bytes for a binary input, its text for a string
    one; a ``ValueError`` naming the first byte that is not UTF-8."""
    if is_binary(feature.type):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"it is not UTF-8 text (byte {err.start})") from None


def check(media_type: str, inputs: list[Feature]) -> None:
    """Refuse (415) a raw body of ``media_type`` for a model of ``inputs`` that cannot take
    it, naming the media types it takes."""
    takes = accepted(inputs)
    if not any(_matches(media_type, media) for media in takes):
        raise UnsupportedFormat(media_type, [*takes, *MEDIA_TYPES])


def accepted(inputs: list[Feature]) -> list[str]:
    """The media types a model takes as a raw body: its one binary input's (any, unless it
    declares one), its one string input's (``text/*``, unless it declares one); none else."""
    if len(inputs) != 1:
        return []
    feature = inputs[0]
    if is_binary(feature.type):
        return [feature.content_type or "*/*"]
    if pa.types.is_string(feature.type) or pa.types.is_large_string(feature.type):
        return [feature.content_type or "text/*"]
    return []


def answer(
    answer: pa.Table, outputs: list[str], content_types: dict[str, str], accept: str | None
) -> tuple[bytes, str] | None:
    """The raw body of a one-row answer and its media type, when the model has one output
    (of ``outputs``), binary, of a media type declared in ``content_types`` that ``accept``
    takes (or ``accept`` says nothing); ``None``: encode the answer as a table."""
    if answer.num_rows != 1 or len(outputs) != 1:
        return None
    name = outputs[0]
    media = content_types.get(name)
    column = answer.column(name) if name in answer.column_names else None
    if media is None or column is None or not is_binary(column.type):
        return None
    wanted = [part.split(";")[0].strip().lower() for part in (accept or "*/*").split(",")]
    if not any(_matches(media, w) for w in wanted):
        return None
    data = column[0].as_py()
    return (data, media) if data is not None else None


def _matches(media_type: str, pattern: str) -> bool:
    """Whether ``media_type`` is of ``pattern`` (``*/*``, ``image/*``, ``image/png``)."""
    kind, _, sub = pattern.partition("/")
    if kind == "*":
        return media_type not in MEDIA_TYPES  # a table format is read as a table
    given_kind, _, given_sub = media_type.partition("/")
    return kind == given_kind and sub in ("*", given_sub)


def is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)
