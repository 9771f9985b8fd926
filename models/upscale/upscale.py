"""An upscaler: a PNG file in, the same image at twice its width and height out, as PNG
(Pillow's Lanczos filter). The user's own code, served by mmserve's ``python`` runtime; its
one output is binary, of type ``image/png``, so real time answers the image itself and an
async job's result is served as ``image/png``.

A client's file is bounded before Pillow decodes anything: the size is read from the PNG's
own header (IHDR) and must be at most :data:`MAX_SIDE` pixels a side. Anything else is refused
with mmserve's ``InvalidInput`` naming the row: the client's 4xx, not a 500.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from serving.errors import InvalidInput

MAX_SIDE = 2048
SCALE = 2
SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sII")  # the first chunk's length and type, then width and height


def upscale(data: bytes) -> bytes:
    """``data`` (a PNG file) at twice its size, as a PNG file."""
    width, height = _size(data)
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
            bigger = image.resize((width * SCALE, height * SCALE), Image.Resampling.LANCZOS)
    except UnidentifiedImageError:  # its message holds an object's address: not a reason
        raise InvalidInput("not a readable PNG file: Pillow cannot identify it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # Pillow's ways to say it
        raise InvalidInput(f"not a readable PNG file: {err}") from None
    sink = io.BytesIO()
    bigger.save(sink, format="PNG")
    return sink.getvalue()


def _size(data: bytes) -> tuple[int, int]:
    """The image's width and height from its PNG header, refused past :data:`MAX_SIDE`."""
    if not data.startswith(SIGNATURE):
        raise InvalidInput("not a PNG file: it does not start with the PNG signature")
    if len(data) < len(SIGNATURE) + _IHDR.size:
        raise InvalidInput(f"not a readable PNG file: its {len(data)} bytes end before its header")
    _, kind, width, height = _IHDR.unpack_from(data, len(SIGNATURE))
    if kind != b"IHDR":
        raise InvalidInput("not a readable PNG file: its first chunk is not its header (IHDR)")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise InvalidInput(f"the image is {width}x{height} pixels; at most {MAX_SIDE} a side")
    return width, height


class Upscaler:
    """mmserve's ``python`` runtime calls ``load`` once with this folder, then ``predict``
    with each checked batch of rows: one PNG file a row, in the column ``image``."""

    def load(self, folder: Path) -> None:
        pass  # no weights: a filter

    def predict(self, table: pa.Table) -> pa.Table:
        answers = []
        for row, data in enumerate(table.column("image").to_pylist()):
            try:
                answers.append(upscale(data))
            except InvalidInput as err:
                raise InvalidInput(f"row {row}: {err.message}") from None
        return pa.table({"image": pa.array(answers, pa.binary())})
