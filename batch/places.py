"""Where a batch run started over HTTP, a queue or a schedule may read and write: under the
store, or under a root the operator allows (``MMSERVE_BATCH__ROOTS``), and nowhere else.

A caller names a store key (``datasets/customers/``, a glob in its last segment for an
input) or a URL under a root: a path, ``file://`` or ``s3://``. ``..`` is refused whatever
it would resolve to, other schemes are refused, and a local path is checked once its links
are resolved, so a link inside a root that points out of it is refused too. Listing an
input folder checks each file that is a link the same way (see :mod:`batch.spec`).
``mmserve batch run``, run by the machine's own user, is not confined.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from serving.errors import InvalidName
from serving.settings import Settings
from serving.store import validate_key

_GLOB = re.compile(r"^[A-Za-z0-9._=@+*?\[\]-]{1,255}$")
_RULE = "must be under the store or a root in MMSERVE_BATCH__ROOTS"


@dataclass(frozen=True)
class Roots:
    """The store and the operator's roots: local folders (links resolved) and S3 prefixes."""

    store: str  # the store's URL, with a key appended for a caller's key
    local: tuple[str, ...]
    s3: tuple[str, ...]  # bucket/prefix

    @classmethod
    def of(cls, settings: Settings) -> Roots:
        local: list[str] = []
        s3: list[str] = []
        store = _absolute(settings.store_url)
        for root in [store, *settings.batch.roots]:
            parsed = urlparse(root)
            if parsed.scheme == "s3":
                s3.append(f"{parsed.netloc}{parsed.path}".rstrip("/"))
            else:
                local.append(os.path.realpath(parsed.path if parsed.scheme == "file" else root))
        return cls(store.rstrip("/"), tuple(local), tuple(s3))

    def confine(self, location: str, field: str) -> str:
        """``location`` (a key or a URL) as a URL under a root; else :class:`InvalidName`
        (400) naming ``field``. An input may end in a glob."""
        parsed = urlparse(location)
        glob = field == "input"
        if ".." in location.replace("\\", "/").split("/"):
            raise InvalidName(f"batch {field}", location, "'..' is not allowed")
        if parsed.scheme not in ("", "file", "s3") or (parsed.scheme == "file" and parsed.netloc):
            raise InvalidName(f"batch {field}", location, "use a store key, a path or s3://")
        if not parsed.scheme and not location.startswith("/"):
            return self._key(location, field, glob)
        if parsed.scheme == "s3":
            if not self.holds_s3(f"{parsed.netloc}{parsed.path}"):
                raise InvalidName(f"batch {field}", location, _RULE)
            return location
        path = parsed.path if parsed.scheme == "file" else location
        head, _, tail = path.rstrip("/").rpartition("/")
        globbed = glob and any(c in tail for c in "*?[")
        resolved = os.path.realpath(head if globbed else path)
        if not self.holds_local(resolved):
            raise InvalidName(f"batch {field}", location, _RULE)
        return f"{resolved}/{tail}" if globbed else resolved

    def holds_local(self, path: str) -> bool:
        """Whether the local ``path`` (links already resolved) is under a root."""
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in self.local)

    def holds_s3(self, path: str) -> bool:
        """Whether ``bucket/key`` is under an S3 root."""
        path = path.rstrip("/")
        return any(path == root or path.startswith(root + "/") for root in self.s3)

    def holds(self, path: str, local: bool) -> bool:
        """Whether a filesystem ``path`` (a local path or ``bucket/key``) is under a root;
        a local one is checked with its links resolved."""
        return self.holds_local(os.path.realpath(path)) if local else self.holds_s3(path)

    def _key(self, key: str, field: str, glob: bool) -> str:
        """A store key (its last segment a glob, for an input) as a URL in the store."""
        key = key.rstrip("/")
        head, _, tail = key.rpartition("/")
        try:
            if glob and any(c in tail for c in "*?["):
                if head:
                    validate_key(head)
                if not _GLOB.match(tail):
                    raise InvalidName("key", key, "not a glob")
            else:
                validate_key(key)
        except InvalidName:
            rule = "a store key's segments are letters, digits and ._=@+- (and a glob's *?[])"
            raise InvalidName(f"batch {field}", key, rule) from None
        return f"{self.store}/{key}"


def _absolute(url: str) -> str:
    """The store's URL, a local one made absolute (as the store itself resolves it)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file"):
        return url
    return str(Path(parsed.path if parsed.scheme == "file" else url).expanduser().resolve())
