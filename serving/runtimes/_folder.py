"""A folder of code and files as one artifact: a deterministic tar, and its private copy
on this machine, checked file by file before every load.

The tar holds regular files only (sorted, zeroed times and owners), so the same folder
always packs to the same bytes and sha256. It is unpacked once per machine into
``<tempdir>/mmserve-code-<uid>/<sha256>/`` (a directory of this user alone), through a
temporary directory renamed into place, so processes loading it at once never see half a
folder; every load then hashes that copy's files against the tar's own, and refuses a copy
that differs, has a file more or one less.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from serving.errors import TamperedArtifact, UntrustedArtifact

MAX_BYTES = 2 * 2**30
"""The most a folder may hold: its tar is kept in memory, in the store and in every cache."""
SKIPPED = ("__pycache__",)
"""Directories never packed (and removed from an unpacked copy: Python writes them)."""


def pack(folder: Path) -> bytes:
    """The folder's regular files as a deterministic tar; a symbolic link to a file inside
    it is packed as that file. Refused: links leaving it or to directories, devices, pipes,
    more than :data:`MAX_BYTES`."""
    root = folder.resolve()
    files = _files(folder, root)
    total = sum(path.stat().st_size for _, path in files)
    if total > MAX_BYTES:
        raise UntrustedArtifact(str(folder), f"it holds {total} bytes, more than {MAX_BYTES}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with path.open("rb") as file:
                tar.addfile(info, file)
    return buffer.getvalue()


def _files(folder: Path, root: Path) -> list[tuple[str, Path]]:
    """``(name in the tar, path)`` of every file to pack, sorted by name."""
    found = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for entry in [*dirs, *names]:
            path = Path(top, entry)
            name = path.relative_to(folder).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise UntrustedArtifact(str(folder), f"{name} is a link out of the folder")
                if not target.is_file():
                    raise UntrustedArtifact(str(folder), f"{name} is a link to no file")
            elif entry in dirs:
                continue
            elif not stat.S_ISREG(path.lstat().st_mode):
                raise UntrustedArtifact(str(folder), f"{name} is not a regular file")
            if entry in names and not name.endswith(".pyc"):
                found.append((name, path))
    return sorted(found)


def digests(data: bytes, what: str) -> dict[str, str]:
    """The sha256 of each file of a tar :func:`pack` wrote, by name; a member that is not
    a plain file inside the folder is refused."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            name = PurePosixPath(info.name)
            if not info.isreg() or name.is_absolute() or ".." in name.parts:
                raise UntrustedArtifact(what, f"its tar holds {info.name!r}, not a plain file")
            content = tar.extractfile(info)
            assert content is not None  # a regular file has content
            found[name.as_posix()] = _sha256(content)
    return found


def read(data: bytes, name: str) -> bytes | None:
    """The file ``name`` of the tar ``data``; ``None`` when it has none."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        try:
            content = tar.extractfile(name)
        except KeyError:
            return None
        return None if content is None else content.read()


def unpacked(data: bytes, sha256: str, expected: dict[str, str], what: str) -> Path:
    """This machine's copy of the tar ``data`` (whose hash is ``sha256`` and files'
    ``expected``), made if missing, checked against ``expected`` in any case."""
    root = _private_root(what)
    folder = root / sha256
    if not folder.exists():
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(partial, filter="data")
        try:
            os.rename(partial, folder)
        except OSError:  # another process put its copy there first: check that one
            shutil.rmtree(partial, ignore_errors=True)
            if not folder.is_dir():
                raise
    verify(folder, expected, what)
    return folder


def verify(folder: Path, expected: dict[str, str], what: str) -> None:
    """Refuse ``folder`` unless it holds exactly the files ``expected`` names, each with its
    sha256 (:class:`TamperedArtifact` naming the file that differs)."""
    seen = set()
    for top, dirs, names in os.walk(folder):
        for skipped in set(dirs) & set(SKIPPED):
            shutil.rmtree(Path(top, skipped), ignore_errors=True)  # bytecode is never trusted
        dirs[:] = [d for d in dirs if d not in SKIPPED]
        for entry in [*dirs, *names]:
            path = Path(top, entry)
            name = path.relative_to(folder).as_posix()
            if path.is_symlink() or (entry in names and name not in expected):
                raise UntrustedArtifact(
                    what, f"its code folder {folder} holds {name}, which its artifact does not"
                )
            if entry in names:
                with path.open("rb") as file:
                    actual = _sha256(file)
                if actual != expected[name]:
                    raise TamperedArtifact(str(path), expected[name], actual)
                seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise UntrustedArtifact(what, f"its code folder {folder} lacks {missing[0]}")


def _sha256(file: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _private_root(what: str) -> Path:
    """The directory the copies live in, refused unless this user's alone (in a shared
    temporary directory another user could have made it first)."""
    root = Path(tempfile.gettempdir()) / f"mmserve-code-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise UntrustedArtifact(
            what, f"{root}, where its code is unpacked, is not a directory of this user alone"
        )
    return root
