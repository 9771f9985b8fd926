"""The trust root outside the store: which artifacts a server or worker may load at all.

Loading a pickle runs code, and so may a skops artifact whose trusted types (recorded in
the store at registration) name functions. The sha256 recorded beside an artifact proves
only that the two agree: whoever can write the store can rewrite both. An operator who
pins the sha256 of the artifacts it vouches for in the servers' own configuration
(``MMSERVE_REGISTRY__TRUSTED_SHA256`` and/or the file ``MMSERVE_REGISTRY__TRUSTED_SHA256_FILE``
names), which no store writer can change, has every other artifact refused before a byte of
it is decoded. Unset, the store is trusted as it always was (see SECURITY.md).
"""

from __future__ import annotations

from pathlib import Path

from serving.errors import UntrustedArtifact
from serving.settings import SHA256, RegistrySettings

_SOURCES = "MMSERVE_REGISTRY__TRUSTED_SHA256, MMSERVE_REGISTRY__TRUSTED_SHA256_FILE"


def check(settings: RegistrySettings, ref: str, sha256: str) -> None:
    """Refuse ``ref``, whose artifact's bytes hash to ``sha256``, unless the trust root lists
    it; a configured root that cannot be read refuses everything (it fails closed)."""
    if not settings.trusted_sha256 and settings.trusted_sha256_file is None:
        return
    trusted = set(settings.trusted_sha256)
    if settings.trusted_sha256_file is not None:
        trusted |= _read(settings.trusted_sha256_file, ref)
    if sha256.lower() not in trusted:
        raise UntrustedArtifact(
            ref, f"its sha256 {sha256} is not among the trusted hashes ({_SOURCES})"
        )


def _read(path: Path, ref: str) -> set[str]:
    """The hashes in ``path``: the first word of each line; ``#`` starts a comment."""
    try:
        text = path.read_text()
    except OSError as err:
        raise UntrustedArtifact(
            ref, f"the trusted hashes file {path} cannot be read ({err.strerror})"
        ) from None
    hashes = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not SHA256.fullmatch(words[0]):
            raise UntrustedArtifact(
                ref, f"the trusted hashes file {path} line {number} is not a sha256: {words[0]!r}"
            )
        hashes.add(words[0].lower())
    return hashes
