"""Fraud: is a transaction fraudulent? A random forest over 30 numeric features.

A stand-in: no fraud data set ships with scikit-learn, so the bundled breast-cancer data
(Wisconsin diagnostic) plays the transactions. Its 30 measurements are the "transaction
features" (renamed to snake_case, ``mean radius`` -> ``mean_radius``) and its malignant
class is label 1, "fraud". ``txn_id`` identifies a row and is passed through.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

NAME = "fraud"
ID_COLUMN = "txn_id"
FEATURES = [str(name).replace(" ", "_") for name in load_breast_cancer().feature_names]
DESCRIPTION = (
    "Fraud classifier; stand-in data: scikit-learn's breast-cancer set "
    "(label 1 = malignant, playing 'fraud')."
)
TAGS = {"data": "sklearn-breast-cancer", "label": "1=fraud"}


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` transactions drawn from the data set, each with a made-up ``txn_id``."""
    features, _ = _dataset()
    rng = np.random.default_rng(seed)
    picked = rng.choice(features.num_rows, size=rows, replace=rows > features.num_rows)
    ids = rng.choice(10**9, size=rows, replace=False)
    return features.take(picked).add_column(0, ID_COLUMN, pa.array([f"T{i:09d}" for i in ids]))


def train() -> tuple[RandomForestClassifier, pa.Table]:
    """The fitted forest and an input example (feature columns only)."""
    features, fraud = _dataset()
    model = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0)
    return model.fit(features.to_pandas(), fraud), features.slice(0, 16)


@functools.cache
def _dataset() -> tuple[pa.Table, np.ndarray]:
    data = load_breast_cancer()
    features = pa.table(dict(zip(FEATURES, data.data.T, strict=True)))
    # The data set's target is 1 for benign; fraud (the rare, bad class) is malignant.
    return features, (1 - data.target).astype(np.int64)
