"""Files in stream events: the value of a binary feature's field, as its bytes.

A binary feature's field (or the value in the JSON document) is text, as Redis keeps it:

- ``s3://bucket/key``, ``file:///path`` or ``store:<key>``: a reference to an object in the
  consumer's store (``MMSERVE_STORE_URL``), read when the event is scored. A location
  outside the store, a missing object or one past ``MMSERVE_BATCH__MAX_FILE_BYTES`` is a
  dead letter naming the field and the location; a store away leaves the event pending
  (delivered again, dead-lettered on its ``max_deliveries``-th failure).
- anything else: the file's bytes in base64 (standard alphabet, padded), decoded strictly;
  text that is not base64 is a dead letter naming the field.

A string feature (a text) takes the field's text as it is.
"""

from __future__ import annotations

import base64
from http import HTTPStatus

from serving.errors import (
    InputError,
    InvalidField,
    InvalidName,
    MMServeError,
    ObjectNotFound,
    StoreUnavailable,
)
from serving.store import Store

REFERENCES = ("s3://", "file://")
STORE_KEY = "store:"
"""The prefix of a reference by key: ``store:scans/0001.png``."""


class UnreadableFile(InputError):
    """A stream event's reference to an object the consumer cannot take as a file."""

    def __init__(self, field: str, location: str, reason: str) -> None:
        super().__init__(f"field {field!r}: {location!r} {reason}")
        self.field, self.location, self.reason = field, location, reason


class FileUnavailable(MMServeError):
    """A referenced object the store could not give now (the store away): tried again."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    retryable = True

    def __init__(self, field: str, location: str, err: StoreUnavailable) -> None:
        super().__init__(f"field {field!r}: cannot read {location!r}: {err.message}")
        self.field, self.location = field, location


class Files:
    """Reads the file a binary feature's field holds or names (see the module docstring)."""

    def __init__(self, store: Store | None, max_bytes: int, setting: str):
        self.store, self.max_bytes, self.setting = store, max_bytes, setting

    def read(self, field: str, value: str) -> bytes:
        """The bytes ``value`` (the text of ``field``) holds or names."""
        if value.startswith(STORE_KEY) or value.startswith(REFERENCES):
            return self._object(field, value)
        if len(value) // 4 * 3 > self.max_bytes:  # never decoded: it would be too big
            raise UnreadableFile(field, _short(value), self._over)
        try:
            data = base64.b64decode(value, validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            raise InvalidField(field, value, "base64 or a reference") from None
        if len(data) > self.max_bytes:
            raise UnreadableFile(field, _short(value), self._over)
        return data

    @property
    def _over(self) -> str:
        return f"is over {self.max_bytes} bytes ({self.setting})"

    def _object(self, field: str, location: str) -> bytes:
        if self.store is None:
            raise UnreadableFile(field, location, "is a reference, and this consumer has no store")
        named = location.removeprefix(STORE_KEY)
        try:
            key = self.store.key_of(named, field)
        except InvalidName as err:
            rule = err.message.removeprefix(f"invalid {field} {named!r}: ")
            raise UnreadableFile(field, location, f"is outside the store ({rule})") from None
        try:
            return self._bounded(key, field, location)
        except ObjectNotFound:
            raise UnreadableFile(field, location, "names no object") from None
        except StoreUnavailable as err:
            raise FileUnavailable(field, location, err) from err

    def _bounded(self, key: str, field: str, location: str) -> bytes:
        """The object at ``key``, read in chunks: one past the limit is refused having read
        at most the limit and a chunk, never the whole object."""
        assert self.store is not None
        chunks: list[bytes] = []
        size = 0
        blocks = self.store.stream(key)
        try:
            for chunk in blocks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise UnreadableFile(field, location, self._over)
                chunks.append(chunk)
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()
        return b"".join(chunks)


def _short(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}..."
