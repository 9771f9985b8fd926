"""The credit model's pre-processing, the user's own code: what a bank computes from an
application before its model sees it. Training (``models/credit.py``) imports the same
function the served model calls, so the features are computed the same way in both."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

INPUTS = ["income", "debt", "age", "months_employed", "open_accounts", "late_payments"]
OUTPUTS = ["debt_to_income", "log_income", "years_employed"]


def derive(table: pa.Table) -> pa.Table:
    """The derived features of each application (a column per output, float64)."""
    income = table["income"].to_numpy()
    debt = table["debt"].to_numpy()
    employed = table["months_employed"].to_numpy()
    return pa.table(
        {
            "debt_to_income": np.round(debt / income, 6),
            "log_income": np.log(income),
            "years_employed": employed / 12.0,
        }
    )


class Prep:
    """mmserve's ``python`` runtime calls ``load`` once with this folder, then ``predict``
    with each checked batch of rows."""

    def load(self, folder: str) -> None:
        pass  # nothing to read: the features are formulas

    def predict(self, table: pa.Table) -> pa.Table:
        return derive(table)
