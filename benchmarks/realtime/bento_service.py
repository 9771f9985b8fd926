"""The BentoML 1.4 peer of ``benchmarks/realtime.py``: every ``<name>.joblib`` of a folder,
one batchable API each, served by ``bentoml serve`` (see ``bento.py`` for the command line).

    REALTIME_BENTO_MODELS=/dir bentoml serve bento_service:Service --working-dir <this folder>
    POST /predict/<name> {"rows": [row, ...]}  ->  [[p0, p1], ...]  (predict_proba)

A batchable API takes exactly one argument, and BentoML routes are fixed strings, so the
model is chosen by the route: one API per file, generated at import. A model fitted on a
numpy array takes rows of floats (``np.ndarray``, float32, as it was fitted); a model with
``feature_names_in_`` (fitted on a DataFrame: the f0..f19 one, the churn pipeline) takes
rows as objects by column name, or as lists in that column order, and gets a DataFrame
with those columns. Each API calls ``predict_proba`` once per batch that BentoML gathers.

Settings (everything else is BentoML's default):
- ``workers=1``: one process, as the other peers (``threads=1``, the default, runs the
  synchronous APIs in one thread off the event loop).
- ``batchable=True, max_batch_size=64``; BentoML's batch window adapts to the traffic (no
  fixed wait such as MLServer's ``max_batch_time``). ``max_latency_ms=1000`` is not a
  window but a deadline: BentoML answers 503 to a queued request it expects to miss it;
  1 s leaves every request of a c=64 run served.
- ``logging.access.enabled=False``: BentoML writes one access-log line per request by
  default; off here as for the others. Prometheus metrics stay on (BentoML's default).
- The pandas DataFrame input type is not used: BentoML 1.4.39's batch-size count of a
  DataFrame is its shape (a tuple), which breaks the dispatcher; lists of rows batch fine.
- Models are loaded at import (the routes depend on them), in ``bentoml serve``'s parent
  process and again in its one worker.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import bentoml
import joblib
import numpy as np
import pandas as pd
from bentoml.validators import DType

MODELS_ENV = "REALTIME_BENTO_MODELS"
MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 1000
BATCHING = {"batchable": True, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS}

Rows = Annotated[np.ndarray, DType("float32")]


def load(folder: Path) -> dict[str, Any]:
    """Every ``<name>.joblib`` of the folder, by name."""
    return {path.stem: joblib.load(path) for path in sorted(folder.glob("*.joblib"))}


def attribute(name: str) -> str:
    """The Python name of a model's API: ``predict_<name>``, with any other character as _."""
    return "predict_" + re.sub(r"\W", "_", name)


def array_api(name: str, model: Any) -> Any:
    """An API for a model fitted on a numpy array: rows of floats in, probabilities out."""

    def predict(self: Any, rows: Rows) -> np.ndarray:
        return np.asarray(model.predict_proba(rows))

    predict.__name__ = attribute(name)
    return bentoml.api(route=f"/predict/{name}", **BATCHING)(predict)


def frame_api(name: str, model: Any) -> Any:
    """An API for a model fitted on a DataFrame: rows by column name (or in column order)
    in, one DataFrame per batch with the model's columns, probabilities out."""
    columns = list(model.feature_names_in_)

    def predict(self: Any, rows: list[dict[str, Any] | list[Any]]) -> np.ndarray:
        return np.asarray(model.predict_proba(pd.DataFrame(rows, columns=columns)))

    predict.__name__ = attribute(name)
    return bentoml.api(route=f"/predict/{name}", **BATCHING)(predict)


class RealtimeModels:
    """One batchable API per model of the folder in ``$REALTIME_BENTO_MODELS``."""


MODELS = load(Path(os.environ[MODELS_ENV]))
for _name, _model in MODELS.items():
    _api = frame_api if hasattr(_model, "feature_names_in_") else array_api
    setattr(RealtimeModels, attribute(_name), _api(_name, _model))

Service = bentoml.service(
    name="realtime",
    workers=1,
    logging={"access": {"enabled": False}},
)(RealtimeModels)
