"""The two FastAPI peers of ``benchmarks/realtime.py``, each run by uvicorn with one worker.

    uvicorn --app-dir benchmarks/realtime --factory apps:floor
    REALTIME_MODELS=/dir uvicorn --app-dir benchmarks/realtime --factory apps:naive

``floor`` parses the JSON body and returns a constant: the most a Python HTTP server on
this stack can answer. ``naive`` is what a user would write in ten minutes: load each
``<dir>/<name>.joblib`` at start, and call ``predict_proba`` on every request's rows (as a
DataFrame, for a model fitted on one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request

_CONSTANT = {"predictions": [[0.5, 0.5]]}


def floor() -> FastAPI:
    app = _with_health(FastAPI())

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request) -> dict[str, Any]:
        json.loads(await request.body())
        return _CONSTANT

    return app


def naive() -> FastAPI:
    folder = Path(os.environ["REALTIME_MODELS"])
    models = {path.stem: joblib.load(path) for path in folder.glob("*.joblib")}
    app = _with_health(FastAPI())

    @app.post("/v1/models/{name}:predict")
    async def predict(name: str, request: Request) -> dict[str, Any]:
        rows = json.loads(await request.body())["instances"]
        model = models[name]
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            x: Any = np.asarray(rows, dtype=np.float32)
        elif isinstance(rows[0], dict):  # the churn pipeline's mixed columns, by name
            x = pd.DataFrame(rows, columns=names)
        else:  # a model fitted on a DataFrame of floats
            x = pd.DataFrame(np.asarray(rows, dtype=np.float32), columns=names)
        return {"predictions": model.predict_proba(x).tolist()}

    return app


def _with_health(app: FastAPI) -> FastAPI:
    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app
