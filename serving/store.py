"""The S3-style object store: keys under one root URL, backed by ``pyarrow.fs``.

``Store.from_url`` takes a local path, ``file://...`` or ``s3://bucket/prefix``. Every
write is atomic: a reader sees the old object or the new one, never a part. Two writes
need more than that and get it from the backend itself: :meth:`Store.create` (exclusive,
``If-None-Match: *`` on S3, ``link(2)`` on disk) and :meth:`Store.update` (compare and
swap, ``If-Match`` on S3, ``flock(2)`` on disk).

Where a client is told an object is, it is told an absolute URI (:meth:`Store.uri`:
``s3://bucket/prefix/key``, or ``file:///abs/path/key`` on disk, whatever path the store was
named by), and any such URI, an absolute path or a key is taken back (:meth:`Store.key_of`)
only when it resolves inside the store.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import functools
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import pyarrow.fs as pafs

from serving._upload import S3Upload
from serving.errors import (
    AlreadyExists,
    ConcurrentUpdate,
    InvalidName,
    ObjectNotFound,
    StoreUnavailable,
)
from serving.settings import AwsSettings

_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9._=@+-]{1,255}$")
_TMP_PREFIX = ".tmp-"


def validate_key(key: str) -> str:
    """Refuse keys that could escape the store root or confuse a backend."""
    if not key or len(key) > 1024:
        raise InvalidName("key", key, "must be 1 to 1024 characters")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _KEY_SEGMENT.match(segment):
            raise InvalidName(
                "key", key, "segments are letters, digits and ._=@+- (no empty, '.' or '..')"
            )
    return key


class Store:
    """Objects under one root: read, write, create, update, stream, list, delete."""

    def __init__(self, url: str, fs: pafs.FileSystem, root: str, *, aws: AwsSettings | None = None):
        self.url = url
        self._fs = fs
        self._root = root.rstrip("/")
        self._aws = aws
        self._s3_client: Any = None

    @classmethod
    def from_url(cls, url: str, aws: AwsSettings | None = None) -> Store:
        """A store at ``url``: a local path, ``file://path`` or ``s3://bucket/prefix``."""
        parsed = urlparse(url)
        if parsed.scheme == "s3":
            aws = aws or AwsSettings()
            if not parsed.netloc:
                raise InvalidName("store URL", url, "s3 URLs name a bucket: s3://bucket/prefix")
            return cls(url, s3_filesystem(aws), f"{parsed.netloc}{parsed.path}", aws=aws)
        if parsed.scheme not in ("", "file"):
            raise InvalidName("store URL", url, "use a path, file://path or s3://bucket/prefix")
        path = Path(parsed.path if parsed.scheme == "file" else url).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(url, pafs.LocalFileSystem(), str(path))

    @property
    def is_local(self) -> bool:
        return isinstance(self._fs, pafs.LocalFileSystem)

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem, for datasets; pair it with :meth:`path`."""
        return self._fs

    def path(self, key: str) -> str:
        """The filesystem path of ``key`` (validated)."""
        return f"{self._root}/{validate_key(key)}"

    @property
    def root_uri(self) -> str:
        """The store's root as an absolute URI: ``s3://bucket/prefix`` or ``file:///abs``."""
        if self.is_local:
            return Path(os.path.abspath(self._root)).as_uri()
        return f"s3://{self._root}"

    def uri(self, key: str) -> str:
        """Where a client finds ``key`` itself, as an absolute URI (``s3://…`` as boto3 and
        the AWS CLI take it, its key as it is; ``file:///…`` on disk, quoted as file URIs
        are): never relative to this process's directory."""
        key = validate_key(key)
        return f"{self.root_uri}/{quote(key) if self.is_local else key}"

    def key_of(self, location: str, field: str) -> str:
        """The key ``location`` names in this store: a key, a URI :meth:`uri` answers (or
        one under the URL the store was named by), or on disk an absolute path. Anything
        that does not resolve inside the store (another bucket or prefix, a path or a link
        leading out of the folder, another scheme) is :class:`InvalidName` naming ``field``."""
        rule = f"must name an object in the store: a key, or {self.root_uri}/<key>"
        key = self._relative(location)
        try:
            if key is None:
                raise InvalidName(field, location, rule)
            validate_key(key)
            if self.is_local and not _inside(self.path(key), self._root):
                raise InvalidName(field, location, rule)  # a link out of the store
        except InvalidName:
            raise InvalidName(field, location, rule) from None
        return key

    def _relative(self, location: str) -> str | None:
        """``location`` relative to the store's root, or ``None`` if it is not under it."""
        named = self.url.rstrip("/") + "/"
        if location.startswith(named):  # under the URL the store was named by
            return location.removeprefix(named)
        parsed = urlparse(location)
        if parsed.scheme == "s3":
            root = f"{self._root}/"
            path = f"{parsed.netloc}{parsed.path}"
            return path.removeprefix(root) if not self.is_local and path.startswith(root) else None
        if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
            location = unquote(parsed.path)
        elif parsed.scheme or "://" in location:
            return None
        if not location.startswith("/"):
            return location  # a key
        if not self.is_local:
            return None
        real, root = os.path.realpath(location), os.path.realpath(self._root)
        return real.removeprefix(root + "/") if _inside(real, root) else None

    # -- reading -------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        """The whole object, as of one moment: on S3 one GET (pyarrow reads in ranges, which
        can mix two versions of an object replaced meanwhile)."""
        if not self.is_local:
            bucket, s3_key = self.path(key).split("/", 1)
            data, _ = self._s3_get(key, bucket, s3_key)
            if data is None:
                raise ObjectNotFound(key)
            return data
        with self._errors(key), self._fs.open_input_stream(self.path(key)) as f:
            return bytes(f.readall())

    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """A (possibly large) object in chunks, read as they are consumed. On S3 it is one
        streamed GET: reading in ranges costs a request a chunk (and moto's server copies
        the whole object for each). :class:`ObjectNotFound` is raised here, before the
        first chunk."""
        if self.is_local:
            with self._errors(key):
                source: Any = self._fs.open_input_stream(self.path(key))
        else:
            bucket, s3_key = self.path(key).split("/", 1)
            source = self._s3_call(key, "get_object", Bucket=bucket, Key=s3_key)["Body"]
        return self._chunks(key, source, chunk)

    def _chunks(self, key: str, source: Any, chunk: int) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            with self._errors(key), contextlib.closing(source):
                while data := source.read(chunk):
                    yield bytes(data)
        except BotoCoreError as err:  # the connection failed mid-body
            raise StoreUnavailable(self.url, err) from err

    def exists(self, key: str) -> bool:
        """Whether an object is at ``key``: a folder (an S3 prefix) is not one."""
        with self._errors(key):
            return self._fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def list(self, prefix: str = "") -> builtins.list[str]:
        """Names directly under ``prefix`` (objects and sub-prefixes), sorted."""
        base = self.path(prefix) if prefix else self._root
        with self._errors(prefix):
            infos = self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        names = (info.path[len(base) + 1 :] for info in infos)
        return sorted(n for n in names if n and not n.startswith(_TMP_PREFIX))

    def walk(self, prefix: str) -> builtins.list[str]:
        """Every object key below ``prefix``, relative to it, sorted (one listing call)."""
        base = self.path(prefix)
        with self._errors(prefix):
            selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
            infos = self._fs.get_file_info(selector)
        keys = (i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File)
        return sorted(k for k in keys if not any(p.startswith(_TMP_PREFIX) for p in k.split("/")))

    # -- writing -------------------------------------------------------------------------

    def write(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write ``data`` atomically: the object appears whole or not at all."""
        if not self.is_local:
            with self.open_output(key, content_type=content_type) as out:
                out.write(data)
            return
        # On disk, plain system calls: a small record or marker is written on every job
        # step, and pyarrow's streams cost several times as much for a few bytes.
        path = self.path(key)
        tmp = self._temp_path(path)
        with self._errors(key):
            _write_file(tmp, data)
            try:
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    @contextlib.contextmanager
    def open_output(
        self, key: str, exclusive: bool = False, content_type: str | None = None
    ) -> Iterator[Any]:
        """Stream a (possibly large) object into a writable binary file; it appears at ``key``
        only if the block succeeds. With ``exclusive``, only if nothing is at ``key`` either
        (else :class:`AlreadyExists`, and nothing is written): a streamed :meth:`create`.
        On S3 the object is stored with ``content_type`` (a client reading it is told its
        format); a file on disk has none.

        On S3 it is one PUT or one multipart upload, completed after the block and aborted
        if it fails (:mod:`serving._upload`): never a copy, which S3 caps at 5 GiB and bills
        as a second write (pyarrow's streams cannot be abandoned: closing one completes it).
        On disk it is a temporary file in the same folder, renamed into place.
        """
        if not self.is_local:
            with self._s3_upload(key, exclusive, content_type) as upload:
                yield upload
            return
        path = self.path(key)
        temp = self._temp_path(path)
        with self._errors(key):
            self._fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            out = self._fs.open_output_stream(temp)
        try:
            yield out
            with self._errors(key):
                out.close()
                if exclusive:
                    _link(temp, path, key)
                else:
                    self._fs.move(temp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                out.close()
                self._fs.delete_file(temp)
            raise

    def create(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Write ``data`` at ``key`` only if nothing is there; else :class:`AlreadyExists`."""
        path = self.path(key)
        if not self.is_local:  # If-None-Match: * on the PUT or on the upload's completion
            with self._s3_upload(key, True, content_type) as upload:
                upload.write(data)
            return
        tmp = self._temp_path(path)
        with self._errors(key):
            _write_file(tmp, data)
            try:
                os.link(tmp, path)  # atomic, and fails if the name is taken
            except FileExistsError:
                raise AlreadyExists(key) from None
            finally:
                os.unlink(tmp)

    def update(
        self, key: str, change: Callable[[bytes | None], bytes], attempts: int = 20
    ) -> bytes:
        """Replace the object at ``key`` with ``change(current)`` (``None`` if absent), atomically
        against concurrent updates from any process; returns what was written."""
        if self.is_local:
            with self._errors(key):
                return self._update_file(key, change)
        bucket, s3_key = self.path(key).split("/", 1)
        for attempt in range(attempts):
            current, etag = self._s3_get(key, bucket, s3_key)
            new = change(current)
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self._s3_call(key, "put_object", Bucket=bucket, Key=s3_key, Body=new, **condition)
                return new
            except AlreadyExists:
                time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
        raise ConcurrentUpdate(key, attempts)

    def delete(self, key: str) -> None:
        """Remove the object at ``key``; removing an absent object is not an error."""
        with contextlib.suppress(ObjectNotFound), self._errors(key):
            self._fs.delete_file(self.path(key))

    def clean(self, older_than_s: float) -> tuple[int, int]:
        """Remove what failed writes left behind more than ``older_than_s`` ago (a killed
        process aborts nothing): temporary files (``.tmp-*``, also S3 keys of older
        versions) and incomplete multipart uploads. Returns how many of each."""
        cutoff = time.time() - older_than_s
        if self.is_local:
            return _clean_local(Path(self._root), cutoff), 0
        bucket, _, prefix = self._root.partition("/")
        prefix = f"{prefix}/" if prefix else ""
        temporaries = uploads = 0
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in self._pages(pages):
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if name.startswith(_TMP_PREFIX) and item["LastModified"].timestamp() < cutoff:
                    self._s3_call(item["Key"], "delete_object", Bucket=bucket, Key=item["Key"])
                    temporaries += 1
        pages = (
            self._s3()
            .get_paginator("list_multipart_uploads")
            .paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in self._pages(pages):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < cutoff:
                    self._s3_call(
                        upload["Key"],
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    uploads += 1
        return temporaries, uploads

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _s3_upload(
        self, key: str, exclusive: bool, content_type: str | None = None
    ) -> Iterator[S3Upload]:
        bucket, s3_key = self.path(key).split("/", 1)
        part_bytes = (self._aws or AwsSettings()).part_mb << 20
        call = functools.partial(self._s3_call, key)
        upload = S3Upload(call, bucket, s3_key, part_bytes, exclusive, content_type)
        try:
            yield upload
            upload.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # else the clean-up (or a lifecycle rule) will
                upload.abort()
            raise

    def _pages(self, pages: Iterable[Any]) -> Iterator[Any]:
        """A paginator's pages, its errors turned into mmserve's."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from pages
        except (BotoCoreError, ClientError) as err:
            raise StoreUnavailable(self.url, err) from err

    @staticmethod
    def _temp_path(path: str) -> str:
        head, _, tail = path.rpartition("/")
        return f"{head}/{_TMP_PREFIX}{uuid.uuid4().hex}-{tail}"

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn the filesystem's errors into mmserve's."""
        try:
            yield
        except FileNotFoundError as err:
            raise ObjectNotFound(key) from err
        except OSError as err:
            raise StoreUnavailable(self.url, err) from err

    def _update_file(self, key: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """:meth:`update` on disk: ``flock(2)`` on the file itself, which a writer replaces
        by a rename (readers never see half a file); a writer that got the lock of a file
        replaced meanwhile tries again on the new one. An absent object is created by a
        link, which fails if another writer created it first (then that one is changed).
        No lock file of its own: creating one cost a job more than the rest of its update."""
        path = self.path(key)
        while True:
            try:
                f = open(path, "rb")  # noqa: SIM115  (closed below)
            except FileNotFoundError:
                new = change(None)
                with contextlib.suppress(AlreadyExists):
                    self.create(key, new)
                    return new
                continue
            with f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    if os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:
                        continue  # replaced (or removed) while this writer waited
                except FileNotFoundError:
                    continue
                new = change(f.read())
                self.write(key, new)
                return new

    def _s3(self) -> Any:
        """A boto3 client for the conditional requests pyarrow does not expose."""
        if self._s3_client is None:
            import boto3

            aws = self._aws or AwsSettings()
            self._s3_client = boto3.client(
                "s3",
                endpoint_url=aws.endpoint_url,
                aws_access_key_id=_secret(aws.access_key_id),
                aws_secret_access_key=_secret(aws.secret_access_key),
                region_name=aws.region,
                config=_boto_config(aws),
            )
        return self._s3_client

    def _s3_get(self, key: str, bucket: str, s3_key: str) -> tuple[bytes | None, str | None]:
        try:
            response = self._s3_call(key, "get_object", Bucket=bucket, Key=s3_key)
        except ObjectNotFound:
            return None, None
        with self._errors(key):
            return response["Body"].read(), response["ETag"]

    def _s3_call(self, key: str, operation: str, **request: Any) -> Any:
        """One boto3 request, its errors turned into mmserve's."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._s3(), operation)(**request)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise ObjectNotFound(key) from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AlreadyExists(key) from None
            raise StoreUnavailable(self.url, err) from err
        except BotoCoreError as err:
            raise StoreUnavailable(self.url, err) from err


def s3_filesystem(aws: AwsSettings) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem for ``aws`` (endpoint, credentials, region)."""
    return pafs.S3FileSystem(
        endpoint_override=aws.endpoint_url,
        access_key=_secret(aws.access_key_id),
        secret_key=_secret(aws.secret_access_key),
        region=aws.region,
        # Upload parts as they fill, in the writer's thread: a background upload slower
        # than the writer would queue parts in memory without bound.
        background_writes=False,
        # Every request ends: a hanging store is a StoreUnavailable within about
        # max_attempts x request_timeout_s, never a request held for minutes.
        connect_timeout=aws.connect_timeout_s,
        request_timeout=aws.request_timeout_s,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=aws.max_attempts),
    )


def _boto_config(aws: AwsSettings) -> Any:
    """boto3's timeouts and retries, the same as pyarrow's (botocore's own default is a
    60 s read timeout, tried up to 5 times)."""
    from botocore.config import Config

    return Config(
        connect_timeout=aws.connect_timeout_s,
        read_timeout=aws.request_timeout_s,
        retries={"mode": "standard", "total_max_attempts": aws.max_attempts},
    )


def _inside(path: str, root: str) -> bool:
    """Whether the local ``path``, its links resolved, is below ``root``."""
    real = os.path.realpath(path)
    return real.startswith(os.path.realpath(root).rstrip("/") + "/")


def _link(temp: str, path: str, key: str) -> None:
    """Publish the file ``temp`` at ``path`` unless something is there (``link(2)`` is atomic,
    and fails if the name is taken)."""
    try:
        os.link(temp, path)
    except FileExistsError:
        raise AlreadyExists(key) from None
    finally:
        os.unlink(temp)


def _write_file(path: str, data: bytes) -> None:
    """``data`` as the file ``path``, its folder made if missing (only then: a look for it
    on every write cost more than the write)."""
    try:
        with open(path, "wb") as f:
            f.write(data)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _clean_local(root: Path, cutoff: float) -> int:
    removed = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            with contextlib.suppress(FileNotFoundError):  # another cleaner was first
                if name.startswith(_TMP_PREFIX) and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
