"""Credit: will an applicant default? An XGBoost classifier over an application's fields
and the features ``credit-prep`` (the user's own code) derives from them.

The applications are synthetic: default grows with the debt-to-income ratio and late
payments, and falls with age, employment and income, plus noise. ``application_id``
identifies a row and is passed through. Registered as XGBoost's own format (no pickle).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xgboost

NAME = "credit"
ID_COLUMN = "application_id"
FIELDS = ["income", "debt", "age", "months_employed", "open_accounts", "late_payments"]
FEATURES = [*FIELDS, "debt_to_income", "log_income", "years_employed"]
DESCRIPTION = "Credit default classifier (XGBoost) on synthetic applications (1 = default)."
TAGS = {"data": "synthetic", "label": "1=default", "runtime": "xgboost"}
TRAIN_ROWS = 4000


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` synthetic applications with their derived features: the id, then the
    features (what the pipeline's first step hands this model)."""
    return with_features(applications(rows, seed)[0])


def with_features(table: pa.Table) -> pa.Table:
    """The applications with the features ``credit-prep`` derives, computed by its code."""
    from models.credit_prep.features import derive

    derived = derive(table)
    for name in derived.column_names:
        table = table.append_column(name, derived[name])
    return table


def train() -> tuple[xgboost.XGBClassifier, pa.Table]:
    """The fitted booster and an input example (feature columns only)."""
    table, defaulted = applications(TRAIN_ROWS, seed=0)
    features = with_features(table).select(FEATURES)
    model = xgboost.XGBClassifier(
        n_estimators=100, max_depth=4, learning_rate=0.1, random_state=0, n_jobs=1
    )
    return model.fit(features.to_pandas(), defaulted), features.slice(0, 16)


def applications(rows: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Synthetic applications (the id, then the raw fields) and whether each defaulted."""
    rng = np.random.default_rng(seed)
    income = np.round(rng.lognormal(10.8, 0.5, rows), 2)
    debt = np.round(income * rng.beta(2, 5, rows) * 1.5, 2)
    age = rng.integers(18, 80, rows).astype(np.float64)
    employed = np.minimum(rng.gamma(2.0, 30.0, rows), (age - 16) * 12).round()
    accounts = rng.poisson(4, rows).astype(np.float64)
    late = rng.poisson(0.6, rows).astype(np.float64)
    logit = (
        -2.0
        + 3.0 * debt / income
        + 0.8 * late
        - 0.02 * (age - 40)
        - 0.004 * employed
        - 0.3 * (np.log(income) - 10.8)
        + rng.normal(0, 0.5, rows)
    )
    ids = rng.choice(10**8, size=rows, replace=False)
    table = pa.table(
        {
            ID_COLUMN: [f"A{i:08d}" for i in ids],
            "income": income,
            "debt": debt,
            "age": age,
            "months_employed": employed,
            "open_accounts": accounts,
            "late_payments": late,
        }
    )
    return table, (logit > 0).astype(np.int64)
