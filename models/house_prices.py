"""House prices: what will a house sell for? Gradient boosting over five numeric columns.

The houses are synthetic: price grows with floor area, bedrooms and bathrooms, and falls
with age and distance from the city centre, plus noise. ``listing_id`` identifies a row
and is passed through.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.ensemble import GradientBoostingRegressor

NAME = "house_prices"
ID_COLUMN = "listing_id"
FEATURES = ["sqft", "bedrooms", "bathrooms", "age_years", "distance_km"]
DESCRIPTION = "House-price regressor on synthetic listings (prediction in dollars)."
TAGS = {"data": "synthetic", "unit": "USD"}
TRAIN_ROWS = 2000


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` synthetic listings as a request would carry them: the id, then the features."""
    return _houses(rows, seed)[0]


def train() -> tuple[GradientBoostingRegressor, pa.Table]:
    """The fitted regressor and an input example (feature columns only)."""
    houses, price = _houses(TRAIN_ROWS, seed=0)
    features = houses.select(FEATURES)
    model = GradientBoostingRegressor(
        n_estimators=150, max_depth=3, learning_rate=0.1, random_state=0
    )
    return model.fit(features.to_pandas(), price), features.slice(0, 16)


def _houses(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    sqft = rng.integers(450, 4500, rows)
    # Bigger houses have more rooms, so the features are correlated as real ones are.
    bedrooms = np.clip(np.round(sqft / 700 + rng.normal(0, 0.7, rows)), 1, 6).astype(np.int64)
    bathrooms = np.clip(np.round(2 * (bedrooms / 2 + rng.normal(0, 0.5, rows))) / 2, 1.0, 4.0)
    age = rng.integers(0, 100, rows)
    distance = np.round(rng.gamma(2.0, 6.0, rows), 1)
    price = (
        40_000
        + 180.0 * sqft
        + 12_000.0 * bedrooms
        + 15_000.0 * bathrooms
        - 900.0 * age
        - 35_000.0 * np.log1p(distance)
        + rng.normal(0, 20_000, rows)
    )
    ids = rng.choice(1_000_000, size=rows, replace=False)
    table = pa.table(
        {
            ID_COLUMN: [f"L{i:06d}" for i in ids],
            "sqft": sqft,
            "bedrooms": bedrooms,
            "bathrooms": bathrooms,
            "age_years": age,
            "distance_km": distance,
        }
    )
    return table, price
