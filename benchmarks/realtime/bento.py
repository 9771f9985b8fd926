"""BentoML 1.4 as a peer of ``benchmarks/realtime.py``: its install, command line and requests.

    from bento import ensure_bentoml, bentoml_server, request_path, request_body, read_proba
    python = ensure_bentoml(WORK, WORK / "logs" / "bentoml-install.log")
    argv, env = bentoml_server(python, artifacts / "joblib", port)   # cwd: anywhere
    # ready when GET READY_PATH answers 200; then
    # POST request_path(name) with request_body(name, row) -> read_proba(json answer)

BentoML runs in its own venv (``<work>/bentoml-venv``) with the scikit-learn, joblib,
XGBoost, LightGBM, pandas and NumPy of the calling process, so that it loads the same
joblib files. The service is ``bento_service.py`` beside this file (see its docstring for
the settings: one worker, adaptive batching of up to 64 rows, no access log).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENTOML = "bentoml==1.4.39"  # the newest release may not resolve here (PEERS.md)
# Libraries that unpickle the artifacts: the same versions as the process that wrote them.
SAME_AS_CALLER = ("scikit-learn", "joblib", "xgboost", "lightgbm", "pandas", "numpy")
MODELS_ENV = "REALTIME_BENTO_MODELS"  # the folder of <name>.joblib files the service loads
READY_PATH = "/readyz"  # 200 once the service has loaded every model


def pins() -> tuple[str, ...]:
    """BentoML's pin, then the caller's versions of the libraries that read the artifacts."""
    return (BENTOML, *(f"{name}=={version(name)}" for name in SAME_AS_CALLER))


def ensure_bentoml(work: Path, log: Path) -> Path | None:
    """The python of BentoML's venv at ``work/bentoml-venv``, installed with :func:`pins`
    unless the venv's stamp already lists them; None (and a line saying why) on failure."""
    venv = work / "bentoml-venv"
    python, stamp = venv / "bin" / "python", venv / ".pins"
    wanted = "\n".join(pins())
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {BENTOML} into {venv} ...", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "-q", *pins()],
        ]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                print(f"BentoML skipped: its install failed; see {log}", flush=True)
                return None
    stamp.write_text(wanted)
    return python


def bentoml_server(
    python_or_exe: Path, models_dir: Path, port: int
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve every ``<name>.joblib`` of ``models_dir``
    on 127.0.0.1:``port``; ``python_or_exe`` is the venv's python or its ``bentoml``. The
    service is found by ``--working-dir``, so any cwd does; BentoML's home (its state and
    metrics files) is ``home`` in the venv, and its usage tracking is off."""
    executable = Path(python_or_exe).parent / "bentoml"  # not resolved: the venv's bin
    argv = [str(executable), "serve", "bento_service:Service", "--working-dir", str(HERE)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    env = {
        MODELS_ENV: str(models_dir),
        "BENTOML_HOME": str(executable.parent.parent / "home"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    return argv, env


def request_path(model_name: str) -> str:
    """The route of a model's batchable API."""
    return f"/predict/{model_name}"


def request_body(model_name: str, row: list[Any] | dict[str, Any]) -> bytes:
    """One row as its model's API takes it: a list of floats for a model fitted on a numpy
    array; an object by column name (or a list in column order) for one fitted on a
    DataFrame. The body is the same shape for every model (the route names the model)."""
    return json.dumps({"rows": [row]}).encode()


def read_proba(answer: Any) -> list[float]:
    """The probabilities of the one row of a request, from its parsed JSON answer."""
    return [float(p) for p in answer[0]]
