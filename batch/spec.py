"""What a batch run is asked to do, and where its input comes from."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, Field, model_validator

from batch.places import Roots
from serving.errors import InvalidName
from serving.settings import AwsSettings
from serving.store import s3_filesystem

Format = Literal["parquet", "csv", "jsonl"]
SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
OTHER_TABLES = (".arrow", ".arrows", ".feather", ".ipc")
"""Table formats a batch run does not read: such a file is refused, never taken for a file."""
FILE: Literal["file"] = "file"
"""An input file's format when it is no table: one row of a run over files (:mod:`batch.files`)."""


class BatchSpec(BaseModel):
    """A batch transform: score every row of ``input`` with ``model`` into ``output``."""

    model: str = Field(
        description="Model reference, or a chain of them (prep:1,fraud@production); "
        "versions are pinned at the start"
    )
    input: str = Field(description="A file, a folder or a glob; a local path or s3://...")
    output: str = Field(description="A folder, local or s3://...; parts and _manifest.json")
    id_column: str | None = Field(None, description="Input column copied to every output row")
    format: Format = "parquet"
    keep_columns: list[str] = Field([], description="More input columns copied to the output")
    join_input: bool = Field(False, description="Copy every input column to the output")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="A bad row stops the run (fail) or goes to _rejects/ (skip)"
    )
    batch_rows: int = Field(65_536, ge=1, description="Rows read and scored at a time")
    partition_rows: int = Field(
        1_000_000, ge=1, description="Rows per partition of a large parquet file (row groups)"
    )

    publish_online: bool = Field(
        False,
        description="Also publish each row's outputs, keyed by id_column, to Redis for "
        "GET /v1/models/{ref}/precomputed/{id}; the run replaces the model's last one whole",
    )
    files_out: bool = Field(
        False,
        description="A run over files (images, documents): write each file's answer, the "
        "model's one binary output, as <path>.out under output",
    )

    @model_validator(mode="after")
    def _consistent(self) -> BatchSpec:
        if self.join_input and self.keep_columns:
            raise ValueError("keep_columns and join_input exclude each other")
        if self.publish_online and not self.id_column:
            raise ValueError("publish_online needs id_column: answers are looked up by id")
        if self.files_out and self.publish_online:
            raise ValueError("files_out and publish_online exclude each other")
        return self

    def passthrough(self, columns: list[str]) -> list[str]:
        """The input columns copied to the output, in order."""
        if self.join_input:
            return columns
        wanted = [self.id_column] if self.id_column else []
        return [*wanted, *(c for c in self.keep_columns if c not in wanted)]


def confined(spec: BatchSpec, roots: Roots) -> BatchSpec:
    """``spec`` with its input and output under ``roots`` (a key made a URL in the store);
    else :class:`InvalidName` (400) naming the field."""
    places = {"input": roots.confine(spec.input, "input")}
    places["output"] = roots.confine(spec.output, "output")
    return spec.model_copy(update=places)


@dataclass(frozen=True)
class InputFile:
    path: str
    format: Format | Literal["file"]
    name: str = ""
    """A file that is no table: its path relative to the input (a run over files' ``path``)."""


def input_files(
    url: str, aws: AwsSettings | None = None, limit: int = 10_000, roots: Roots | None = None
) -> tuple[pafs.FileSystem, list[InputFile]]:
    """The filesystem and the files (sorted) a batch input names: one file, every file under a
    folder (but hidden or ``_``-prefixed ones, and folders), or the files a glob matches.
    They are tables, or all files that are no tables (format ``file``, named relative to the
    folder, the glob's or the file's): a mix of both is refused naming one of each.

    The listing is bounded (past ``limit`` files and folders: :class:`InvalidName`), never
    enters a folder through a link (no loops), and with ``roots`` (a confined run) refuses a
    file whose link leads out of them."""
    fs, path = filesystem(url, aws)
    head, _, tail = path.rpartition("/")
    local = isinstance(fs, pafs.LocalFileSystem)
    listing = _local_listing if local else _s3_listing
    aws = aws or AwsSettings()
    if any(c in tail for c in "*?["):
        if local and not os.path.isdir(head):
            raise InvalidName("batch input", url, "its folder does not exist")
        found = [
            p for p in listing(aws, head, False, limit, url) if fnmatch.fnmatch(_name(p), tail)
        ]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InvalidName("batch input", url, "no such file or folder")
        found = [path]
        if info.type == pafs.FileType.Directory:
            found = listing(aws, path, True, limit, url)
            head = path
    files = _typed(url, head, [p for p in sorted(found) if not _name(p).startswith((".", "_"))])
    for file in files:
        if roots is not None and not roots.holds(file.path, local):
            raise InvalidName("batch input", url, f"{file.path} links out of the allowed roots")
    if not files:
        raise InvalidName("batch input", url, "names no file")
    return fs, files


def _local_listing(
    aws: AwsSettings, folder: str, recursive: bool, limit: int, url: str
) -> list[str]:
    """The files under ``folder`` (links to files included; folders that are links not
    entered), stopping past ``limit`` entries."""
    found: list[str] = []
    seen = 0
    folders = [folder]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                seen += 1
                if seen > limit:
                    raise _too_many(url, limit)
                if entry.name.startswith((".", "_")):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        folders.append(entry.path)
                elif entry.is_file():
                    found.append(entry.path)
    return found


def _s3_listing(aws: AwsSettings, folder: str, recursive: bool, limit: int, url: str) -> list[str]:
    """The objects under ``bucket/prefix`` (but hidden or ``_``-prefixed ones, at any depth
    below it), a page at a time, stopping past ``limit`` objects and folders."""
    bucket, _, prefix = folder.partition("/")
    prefix = f"{prefix}/" if prefix else ""
    pages = (
        _s3_client(aws)
        .get_paginator("list_objects_v2")
        .paginate(
            Bucket=bucket,
            Prefix=prefix,
            **({} if recursive else {"Delimiter": "/"}),
            PaginationConfig={"PageSize": min(limit + 1, 1000)},
        )
    )
    found: list[str] = []
    seen = 0
    for page in pages:
        seen += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        if seen > limit:
            raise _too_many(url, limit)
        keys = (o["Key"][len(prefix) :] for o in page.get("Contents", []))
        found += [f"{folder}/{k}" for k in keys if k and not _hidden(k)]
    return found


def _s3_client(aws: AwsSettings) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=aws.endpoint_url,
        aws_access_key_id=_secret(aws.access_key_id),
        aws_secret_access_key=_secret(aws.secret_access_key),
        region_name=aws.region,
    )


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _hidden(key: str) -> bool:
    return any(part.startswith((".", "_")) for part in key.split("/"))


def _too_many(url: str, limit: int) -> InvalidName:
    rule = f"lists more than {limit} files and folders (MMSERVE_BATCH__MAX_INPUT_FILES)"
    return InvalidName("batch input", url, rule)


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _typed(url: str, root: str, paths: list[str]) -> list[InputFile]:
    """``paths`` (under ``root``) as tables, or as files that are no tables; not a mix."""
    tables = [p for p in paths if _suffix(p) in SUFFIXES or _suffix(p) in OTHER_TABLES]
    others = sorted(set(paths) - set(tables))
    if tables and others:
        rule = (
            f"it mixes tables ({tables[0]}) and files that are no tables ({others[0]}): "
            "score them in two runs"
        )
        raise InvalidName("batch input", url, rule)
    if others:
        return [InputFile(p, FILE, p[len(root) + 1 :]) for p in others]
    return [InputFile(p, _format_of(p)) for p in tables]


def _suffix(path: str) -> str:
    name = _name(path)
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _format_of(path: str) -> Format:
    try:
        return SUFFIXES[_suffix(path)]
    except KeyError:
        raise InvalidName("batch input file", path, f"use one of {', '.join(SUFFIXES)}") from None


def filesystem(url: str, aws: AwsSettings | None) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``url`` and the path in it."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return s3_filesystem(aws or AwsSettings()), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if parsed.scheme not in ("", "file"):
        raise InvalidName("batch location", url, "use a path, file://path or s3://bucket/key")
    path = Path(parsed.path if parsed.scheme == "file" else url).expanduser().resolve()
    return pafs.LocalFileSystem(), str(path)
