"""A handwritten digit as a PNG file, read into the 64 pixels scikit-learn's digits classifier
takes: the user's own pre-processing code, served by mmserve's ``python`` runtime.

``load_digits`` holds 8x8 images of values 0..16. :func:`encode` writes one as an 8x8
grayscale PNG of values ``round(v * 255 / 16)``; :func:`decode` reads it back as
``round(p * 16 / 255)``, which gives every value back exactly (the rounding error, at most
half a grey level, is 1/32 of a digits step). Training (``models/digits.py``) writes its
files with the same :func:`encode`.

Reading a file a client sent is bounded before Pillow decodes anything: the size is read from
the PNG's own header (its first chunk, IHDR) and must be 8x8, so no image larger than 64
pixels is ever decompressed. Anything else is refused with mmserve's ``InvalidInput`` naming
the row and what was found: the client's 4xx (422; 400 on SageMaker's routes), not a 500.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from serving.errors import InvalidInput

SIDE = 8
PIXELS = [f"p{i}" for i in range(SIDE * SIDE)]
SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = struct.Struct(">I4sII")  # the first chunk's length and type, then width and height
_LEVELS = 16  # load_digits' values are 0..16


def encode(pixels: np.ndarray) -> bytes:
    """The 8x8 grayscale PNG of one digit, ``pixels`` its 64 values 0..16 (row by row)."""
    levels = np.rint(np.asarray(pixels, np.float64).reshape(SIDE, SIDE) * 255 / _LEVELS)
    sink = io.BytesIO()
    Image.fromarray(levels.astype(np.uint8)).save(sink, format="PNG")
    return sink.getvalue()


def decode(data: bytes) -> np.ndarray:
    """The 64 values 0..16 (float64, row by row) of an 8x8 PNG, read as grayscale; a body
    that is no PNG, or of another size, is refused before it is decompressed."""
    if not data.startswith(SIGNATURE):
        raise InvalidInput("not a PNG file: it does not start with the PNG signature")
    if len(data) < len(SIGNATURE) + _IHDR.size:
        raise InvalidInput(f"not a readable PNG file: its {len(data)} bytes end before its header")
    _, kind, width, height = _IHDR.unpack_from(data, len(SIGNATURE))
    if kind != b"IHDR":
        raise InvalidInput("not a readable PNG file: its first chunk is not its header (IHDR)")
    if (width, height) != (SIDE, SIDE):
        raise InvalidInput(f"the image is {width}x{height} pixels; the model reads {SIDE}x{SIDE}")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            gray = np.asarray(image.convert("L"), np.float64)
    except UnidentifiedImageError:  # its message holds an object's address: not a reason
        raise InvalidInput("not a readable PNG file: Pillow cannot identify it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # Pillow's ways to say it
        raise InvalidInput(f"not a readable PNG file: {err}") from None
    return np.rint(gray.reshape(-1) * _LEVELS / 255)


class Pixels:
    """mmserve's ``python`` runtime calls ``load`` once with this folder, then ``predict``
    with each checked batch of rows: one PNG file a row, in the column ``image``."""

    def load(self, folder: Path) -> None:
        pass  # nothing to read: the pixels are the model's input

    def predict(self, table: pa.Table) -> pa.Table:
        files = table.column("image").to_pylist()
        matrix = np.array([_read(row, f) for row, f in enumerate(files)])
        matrix = matrix.reshape(len(files), len(PIXELS))
        return pa.table(dict(zip(PIXELS, matrix.T, strict=True)))


def _read(row: int, data: bytes) -> np.ndarray:
    try:
        return decode(data)
    except InvalidInput as err:
        raise InvalidInput(f"row {row}: {err.message}") from None
