"""Risk: how many days late will an applicant's next payment be? A LightGBM regressor.

The same synthetic applications as ``credit``; the target is the expected days late.
``application_id`` identifies a row and is passed through. Registered as LightGBM's own
text model (no pickle).
"""

from __future__ import annotations

import lightgbm
import numpy as np
import pyarrow as pa

from models import credit
from models.credit import applications

NAME = "risk"
ID_COLUMN = credit.ID_COLUMN
FEATURES = credit.FIELDS
DESCRIPTION = "Days-late regressor (LightGBM) on synthetic applications."
TAGS = {"data": "synthetic", "unit": "days", "runtime": "lightgbm"}
TRAIN_ROWS = 4000


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` synthetic applications: the id, then the features."""
    return applications(rows, seed + 1_000)[0]


def train() -> tuple[lightgbm.LGBMRegressor, pa.Table]:
    """The fitted regressor and an input example (feature columns only)."""
    table, _ = applications(TRAIN_ROWS, seed=1)
    features = table.select(FEATURES)
    x = features.to_pandas()
    days = np.maximum(0.0, 30 * x["debt"] / x["income"] + 6 * x["late_payments"] - 5)
    model = lightgbm.LGBMRegressor(n_estimators=100, random_state=0, n_jobs=1, verbose=-1)
    return model.fit(x, days), features.slice(0, 16)
