"""Fraud, exported: the fraud data's scaler and logistic regression as an ONNX graph.

What a team whose model comes from another framework registers: a graph (here made by
skl2onnx from a scikit-learn pipeline; ``torch.onnx.export`` makes one from PyTorch), run
by onnxruntime. The same transactions as ``fraud``; ``txn_id`` is passed through.
"""

from __future__ import annotations

import numpy as np
import onnx
import pyarrow as pa
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models import fraud

NAME = "fraud-onnx"
ID_COLUMN = fraud.ID_COLUMN
FEATURES = fraud.FEATURES
DESCRIPTION = "Fraud classifier exported to ONNX (skl2onnx), run by onnxruntime."
TAGS = {"data": "sklearn-breast-cancer", "label": "1=fraud", "runtime": "onnx"}


def sample(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` transactions, as ``fraud`` draws them."""
    return fraud.sample(rows, seed + 3_000)


def train() -> tuple[onnx.ModelProto, pa.Table]:
    """The exported graph and an input example (feature columns only)."""
    features, label = fraud._dataset()
    x = np.column_stack([c.to_numpy() for c in features.columns])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, label)
    graph = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    return graph, features.slice(0, 16)
