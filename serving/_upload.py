"""One object written to S3 in one step, and nothing visible if the write fails.

An object up to one part is a single PUT when the write ends. A larger one is a multipart
upload: parts go up as they fill (one part in memory), and the object appears only when
the upload is completed, after the writer's last byte; a failed write aborts the upload.
Nothing is written twice and nothing is copied (S3 copies at most 5 GiB in one request).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

_CHECKSUMS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


class S3Upload(io.RawIOBase):
    """A writable binary file whose bytes become the object at ``bucket/key`` on
    :meth:`commit` (only if nothing is there when ``exclusive``), or never, after :meth:`abort`.

    ``call(operation, **request)`` is one request of the store's boto3 client, its errors
    turned into mmserve's."""

    def __init__(
        self,
        call: Callable[..., Any],
        bucket: str,
        key: str,
        part_bytes: int,
        exclusive: bool,
        content_type: str | None = None,
    ):
        super().__init__()
        self._call, self._target = call, {"Bucket": bucket, "Key": key}
        # Named where the object is made: the PUT, or the multipart upload's creation.
        self._type = {"ContentType": content_type} if content_type else {}
        self._part_bytes = part_bytes
        self._condition = {"IfNoneMatch": "*"} if exclusive else {}
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        self._buffer += data
        self._size += size
        while len(self._buffer) >= self._part_bytes:
            part = bytes(self._buffer[: self._part_bytes])
            del self._buffer[: self._part_bytes]
            self._upload(part)
        return size

    def tell(self) -> int:
        return self._size

    def commit(self) -> None:
        """Publish what was written: one PUT, or the last part and the completion."""
        if self._upload_id is None:
            body = bytes(self._buffer)
            self._call("put_object", **self._target, Body=body, **self._type, **self._condition)
            return
        if self._buffer:
            self._upload(bytes(self._buffer))
            self._buffer.clear()
        self._call(
            "complete_multipart_upload",
            **self._target,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
            **self._condition,
        )
        self._upload_id = None

    def abort(self) -> None:
        """Drop the parts uploaded so far (a failed write, or a refused completion)."""
        self._buffer.clear()
        if self._upload_id is not None:
            self._call("abort_multipart_upload", **self._target, UploadId=self._upload_id)
            self._upload_id = None

    def _upload(self, part: bytes) -> None:
        if self._upload_id is None:
            created = self._call("create_multipart_upload", **self._target, **self._type)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        answer = self._call(
            "upload_part", **self._target, UploadId=self._upload_id, PartNumber=number, Body=part
        )
        # The part's checksum, when the client sent one, must be named again at completion.
        checksums = {name: answer[name] for name in _CHECKSUMS if name in answer}
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"], **checksums})
