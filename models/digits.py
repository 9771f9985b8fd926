"""Digits: which digit is a handwritten image, sent as a PNG file? Two models in a pipeline.

``digits-png`` is a folder of the user's own code (``models/digits_png/``, the ``python``
runtime, ``--trust-code``): it reads an 8x8 grayscale PNG into the 64 pixel values
``p0..p63``. ``digits`` is a scikit-learn logistic regression fitted on those values, from
scikit-learn's bundled digits (no download). The endpoint ``digits-pipeline`` chains them,
so a PNG file is answered as it is sent (``curl -H 'content-type: image/png'
--data-binary @1500-is-3.png localhost:8080/endpoints/digits-pipeline/invocations``) or
as a V1 ``{"b64": ...}`` cell. The last :data:`HELD_OUT` digits are never trained on:
:func:`write_pngs` writes those.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from models.digits_png.png import PIXELS, encode
from serving.metadata import ModelVersion
from serving.registry import Registry

NAME = "digits"
READER = "digits-png"
ENDPOINT = "digits-pipeline"
FOLDER = Path(__file__).with_name("digits_png")
FEATURES = PIXELS
HELD_OUT = 297
"""The last digits of ``load_digits``, kept out of training (1,500 are trained on)."""
DESCRIPTION = "Handwritten digit classifier (scikit-learn digits, 8x8 pixels p0..p63)."
READER_DESCRIPTION = "Reads an 8x8 grayscale PNG into its pixels (your own Python code)."
TAGS = {"data": "sklearn-digits", "runtime": "sklearn"}
READER_TAGS = {"data": "sklearn-digits", "runtime": "python"}


def train() -> tuple[LogisticRegression, pa.Table]:
    """The fitted classifier (deterministic) and an input example (the pixels only)."""
    pixels, labels = _digits()
    frame = pd.DataFrame(pixels[:-HELD_OUT], columns=FEATURES)
    model = LogisticRegression(max_iter=2000).fit(frame, labels[:-HELD_OUT])
    return model, pa.Table.from_pandas(frame.head(16), preserve_index=False)


def register(registry: Registry, alias: str = "production") -> tuple[ModelVersion, ModelVersion]:
    """Register the next version of the reader (the folder) and of the classifier, each
    under ``alias``; the endpoint :data:`ENDPOINT` chains them in that order."""
    reader = registry.register(
        FOLDER,
        READER,
        trust_code=True,  # a folder of code runs when loaded
        alias=alias,
        description=READER_DESCRIPTION,
        tags={"recipe": __name__, **READER_TAGS},
    )
    model, example = train()
    classifier = registry.register(
        model,
        NAME,
        alias=alias,
        input_example=example,
        description=DESCRIPTION,
        tags={"recipe": __name__, **TAGS},
    )
    return reader, classifier


def pngs(count: int) -> tuple[list[bytes], list[int]]:
    """The first ``count`` held-out digits as PNG files, and the digit each one shows."""
    pixels, labels = _digits()
    start = len(labels) - HELD_OUT
    if not 0 <= count <= HELD_OUT:
        raise ValueError(f"there are {HELD_OUT} held-out digits, not {count}")
    files = [encode(row) for row in pixels[start : start + count]]
    return files, labels[start : start + count].tolist()


def write_pngs(folder: Path, count: int) -> list[Path]:
    """Write the first ``count`` held-out digits into ``folder`` as PNG files named after
    their place and digit (``1500-is-3.png``); their paths, in that order."""
    folder.mkdir(parents=True, exist_ok=True)
    first = len(_digits()[1]) - HELD_OUT
    paths = []
    for index, (data, label) in enumerate(zip(*pngs(count), strict=True), first):
        path = folder / f"{index}-is-{label}.png"
        path.write_bytes(data)
        paths.append(path)
    return paths


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: 1,797 rows of 64 values 0..16, and their digits."""
    pixels, labels = load_digits(return_X_y=True)
    return pixels, labels
