"""Churn: will a customer leave? Logistic regression over numeric and categorical columns.

The customers are synthetic. Month-to-month contracts, high bills, many support calls,
short tenure and paying by electronic check make churn likelier, as in telecom data.
``customer_id`` identifies a row and is passed through, never used as a feature.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NAME = "churn"
ID_COLUMN = "customer_id"
NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]
CATEGORICAL = ["contract", "payment_method"]
FEATURES = [*NUMERIC, *CATEGORICAL]
DESCRIPTION = "Churn classifier on synthetic customers (label 1 = churns)."
TAGS = {"data": "synthetic", "label": "1=churn"}
CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENTS = ["bank-transfer", "credit-card", "electronic-check", "mailed-check"]
TRAIN_ROWS = 2000


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` synthetic customers as a request would carry them: the id, then the features."""
    return _customers(rows, seed)[0]


def train() -> tuple[Pipeline, pa.Table]:
    """The fitted pipeline and an input example (feature columns only)."""
    customers, churned = _customers(TRAIN_ROWS, seed=0)
    features = customers.select(FEATURES)
    prep = ColumnTransformer(
        [
            ("numeric", StandardScaler(), NUMERIC),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    model = Pipeline([("prep", prep), ("classify", LogisticRegression())])
    return model.fit(features.to_pandas(), churned), features.slice(0, 16)


def _customers(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.choice(1_000_000, size=rows, replace=False)
    tenure = rng.integers(0, 73, rows)
    charges = np.round(rng.uniform(18.0, 120.0, rows), 2)
    calls = rng.poisson(1.5, rows)
    contract = rng.choice(CONTRACTS, rows, p=[0.5, 0.3, 0.2])
    payment = rng.choice(PAYMENTS, rows)
    logit = (
        -0.8
        + 1.5 * (contract == "month-to-month")
        - 1.0 * (contract == "two-year")
        - 0.04 * tenure
        + 0.02 * (charges - 70.0)
        + 0.45 * calls
        + 0.6 * (payment == "electronic-check")
    )
    churned = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    table = pa.table(
        {
            ID_COLUMN: [f"C{i:06d}" for i in ids],
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "contract": contract.tolist(),
            "payment_method": payment.tolist(),
        }
    )
    return table, churned
