"""What a batch run is asked to do, and where its input comes from."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import pyarrow.fs as pafs
from pydantic import BaseModel, Field, model_validator

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

    @model_validator(mode="after")
    def _consistent(self) -> BatchSpec:
        if self.join_input and self.keep_columns:
            raise ValueError("keep_columns and join_input exclude each other")
        if self.publish_online and not self.id_column:
            raise ValueError("publish_online needs id_column: answers are looked up by id")
        return self

    def passthrough(self, columns: list[str]) -> list[str]:
        """The input columns copied to the output, in order."""
        if self.join_input:
            return columns
        wanted = [self.id_column] if self.id_column else []
        return [*wanted, *(c for c in self.keep_columns if c not in wanted)]


@dataclass(frozen=True)
class InputFile:
    path: str
    format: Format


def input_files(
    url: str, aws: AwsSettings | None = None
) -> tuple[pafs.FileSystem, list[InputFile]]:
    """The filesystem and the files (sorted) a batch input names: one file, every file under a
    folder (but hidden or ``_``-prefixed ones), or the files a glob matches."""
    fs, path = filesystem(url, aws)
    head, _, tail = path.rpartition("/")
    if any(c in tail for c in "*?["):
        selector = pafs.FileSelector(head, recursive=False)
        infos = [i for i in fs.get_file_info(selector) if fnmatch.fnmatch(i.base_name, tail)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InvalidName("batch input", url, "no such file or folder")
        infos = [info]
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = [
        InputFile(i.path, _format_of(i.path))
        for i in sorted(infos, key=lambda i: i.path)
        if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))
    ]
    if not files:
        raise InvalidName("batch input", url, "names no file")
    return fs, files


def _format_of(path: str) -> Format:
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    try:
        return SUFFIXES[suffix]
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
