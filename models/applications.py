"""Credit pre-processing: the first step of the credit pipeline, the user's own Python code.

A folder (``models/credit_prep/``: ``features.py`` and its ``mmserve.toml``) registered
with the ``python`` runtime, ``--trust-code``: it derives the debt-to-income ratio, the log
of income and years employed from an application's raw fields. The XGBoost ``credit``
model is trained on those features (computed by the same function), so the pipeline
``credit-prep,credit`` scores raw applications: pre-processing in your code, prediction
in another framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from models import credit
from models.credit import applications
from models.credit_prep.features import INPUTS

NAME = "credit-prep"
ID_COLUMN = credit.ID_COLUMN
FEATURES = INPUTS
DESCRIPTION = "Credit pre-processing (your own Python code): derived application features."
TAGS = {"data": "synthetic", "runtime": "python"}
FOLDER = Path(__file__).with_name("credit_prep")
OPTIONS: dict[str, Any] = {"trust_code": True}
"""Registering a folder of code runs it: it needs the trust flag."""


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` synthetic applications, raw: the id, then the fields."""
    return applications(rows, seed + 2_000)[0]


def train() -> tuple[Path, pa.Table]:
    """Nothing to fit: the folder itself, and an input example."""
    return FOLDER, sample(16).select(FEATURES)
