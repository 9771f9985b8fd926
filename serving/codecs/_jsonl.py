"""JSON lines checked before pyarrow's JSON reader sees a byte of them.

pyarrow's reader (26.0.1, upstream apache/arrow#47409) dereferences a null pointer when the
first value of one of its blocks (1 MiB by default, cut at line breaks) is not an object,
``null`` for one, and it recurses once per level of nesting (its stack ends at ~16,000 levels
on 8 MiB). Both kill the process. So every line must be one object, and nesting is bounded:

- Each line (cut at ``\\n`` and ``\\r``, both of which the reader cuts its blocks at) is
  blank, or starts with ``{`` and ends with ``}`` (spaces and tabs aside). A block starts at
  a line, so its first value is an object. A string cannot hold a raw line break (the reader
  refuses one), so a line ending in ``}`` ends a container; a value the next line's ``{``
  would continue is an error at that ``{``, before anything it nests: the reader meets
  every line at the top level (or stops).
- A line's depth is at most its count of ``{`` and ``[``: a line with more than
  :data:`MAX_DEPTH` is parsed by Python's ``json`` to measure its real depth.

The check is a few vectorised passes over the bytes (a few ms per MiB); ``json`` parses only
lines with many brackets.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

MAX_DEPTH = 64
"""Deepest nesting of a JSON lines row: far past any table's cell, far short of the depth
that overflows a native parser's stack."""

_OPEN, _CLOSE = ord("{"), ord("}")
_BLANK = b" \t"


class NotJsonLines(ValueError):
    """A line that is not one JSON object (``line`` counts from 1)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line} {problem}")
        self.line = line


def check_json_lines(data: bytes | memoryview, first_line: int = 1) -> int:
    """Raise :class:`NotJsonLines` unless each line of ``data`` is blank or one JSON object
    nested at most :data:`MAX_DEPTH` deep; ``first_line``: the number of ``data``'s first line.
    Returns the number of line feeds in ``data`` (the next chunk's ``first_line`` offset)."""
    raw = np.frombuffer(data, np.uint8)
    feeds = raw == 10
    breaks = np.flatnonzero(feeds | (raw == 13))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [raw.size]))
    filled = ends > starts
    starts, ends = starts[filled], ends[filled]
    if starts.size == 0:
        return int(np.count_nonzero(feeds))
    suspects = (raw[starts] != _OPEN) | (raw[ends - 1] != _CLOSE)
    brackets = (raw == _OPEN) | (raw == ord("["))  # summed from a line's start to the next's
    deep = np.add.reduceat(brackets, starts, dtype=np.int64) > MAX_DEPTH
    lines_before = np.flatnonzero(feeds)  # a line's number: the line feeds before it, + 1
    for index in np.flatnonzero(suspects | deep):  # rare: padded, bracket-heavy or refused
        number = first_line + int(np.searchsorted(lines_before, starts[index]))
        _check_line(bytes(raw[starts[index] : ends[index]]), number)
    return int(lines_before.size)


class CheckedLines(io.RawIOBase):
    """A readable stream of ``raw``'s bytes, each line checked before it is handed on: what
    pyarrow's streaming reader reads from instead of the file (a batch run's, an async job's
    input). Raises :class:`NotJsonLines` from ``read`` at the first line refused; holds one
    chunk and the line it cuts."""

    def __init__(self, raw: Any, chunk_bytes: int = 1 << 20, max_line_bytes: int = 1 << 24):
        self.raw, self.chunk_bytes, self.max_line_bytes = raw, chunk_bytes, max_line_bytes
        self.ready, self.pending, self.line, self.ended = b"", b"", 1, False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while not self.ready and not self.ended:
            self._refill()
        size = len(self.ready) if size is None or size < 0 else size
        out, self.ready = self.ready[:size], self.ready[size:]
        return out

    def _refill(self) -> None:
        chunk = self.raw.read(self.chunk_bytes)
        data = self.pending + chunk
        cut = len(data) if not chunk else max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        self.ready, self.pending, self.ended = data[:cut], data[cut:], not chunk
        self.line += check_json_lines(self.ready, self.line)
        if len(self.pending) > self.max_line_bytes:
            raise NotJsonLines(self.line, f"is longer than {self.max_line_bytes} bytes")


def _check_line(line: bytes, number: int) -> None:
    line = line.strip(_BLANK)
    if not line:
        return
    if not (line.startswith(b"{") and line.endswith(b"}")):
        raise NotJsonLines(number, "is not a JSON object (one object per line)")
    if line.count(b"{") + line.count(b"[") <= MAX_DEPTH:
        return
    too_deep = NotJsonLines(number, f"is nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(line)
    except RecursionError:  # nested past Python's own stack
        raise too_deep from None
    except ValueError:
        raise NotJsonLines(number, "is not one JSON object") from None
    if _depth(value) > MAX_DEPTH:
        raise too_deep


def _depth(value: Any) -> int:
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in item)
    return deepest
