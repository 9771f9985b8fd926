"""Real-time serving: mmserve against the HTTP floor, a naive FastAPI app, MLServer and BentoML,
under wrk, on the models people deploy (benchmarks/realistic.py).

    .venv/bin/python benchmarks/realtime.py [--quick] [--duration 10] [--concurrency 1,64]
        [--models lr,lr-df,hgb,rf,xgb,lgbm,churn,churn-onnx]
        [--only floor,naive,mlserver,bentoml,mmserve,mmserve-unbatched] [--grpc]

Each server is its own process with one worker on a free loopback port, pinned to core 0;
wrk (one thread) runs pinned to core 1. Every request is one row, in the format the server
natively speaks. mmserve-unbatched (mmserve with batching off) runs alongside mmserve, at
c=1 only, for the target "batching adds < 0.2 ms to p50 at c=1". With --grpc, mmserve-grpc
(mmserve answering the Open Inference Protocol over gRPC: one raw V2 tensor per request,
loaded by h2load instead of wrk) takes turns with mmserve over HTTP, and the run prints
gRPC's req/s over HTTP's. See benchmarks/README.md, "Real time".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from rich.console import Console
from rich.table import Table

from serving.codecs import v2
from serving.registry import Registry
from serving.store import Store

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
sys.path[:0] = [str(ROOT), str(HERE / "realtime")]  # the model set (and the demo's churn), bento
import bento  # noqa: E402

from benchmarks import realistic  # noqa: E402

WORK = HERE / ".work"
RESULTS = WORK / "realtime.json"
MLSERVER_VENV = WORK / "mlserver-venv"
MLSERVER_PINS = (
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    "mlserver-xgboost==1.7.1",
    "mlserver-lightgbm==1.7.1",
    "uvloop==0.21.0",  # newer uvloop crashes MLServer 1.7.1 at start (SeldonIO/MLServer#2286)
    f"scikit-learn=={sklearn.__version__}",  # the same estimator class as the pickle
    f"joblib=={joblib.__version__}",
    f"xgboost=={version('xgboost')}",  # the same library reads the same model file
    f"lightgbm=={version('lightgbm')}",
    f"pandas=={version('pandas')}",
)
MLSERVER_BATCH = {"max_batch_size": 64, "max_batch_time": 0.002}
SERVERS = ("floor", "naive", "mlserver", "bentoml", "mmserve", "mmserve-unbatched")
PEERS = ("mlserver", "bentoml")  # the servers users would pick instead
GRPC = "mmserve-grpc"  # --grpc: mmserve over gRPC, beside mmserve over HTTP
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
NAME_WIDTH = max(len(name) for name in SERVERS)
MODELS = realistic.MODELS
# Peers serve the model as scikit-learn (MLServer 1.7.1 has no ONNX runtime); mmserve's
# ONNX graph is compared with the floor only.
COMPILED = {"churn-onnx"}
TARGET_C = 64  # the concurrency the issue sets its throughput targets at
TURNS = 4  # wrk runs per server when servers take turns at one concurrency (measure_in_turns)
PROBA_TOLERANCE = 1e-6
ONNX_TOLERANCE = 1e-5  # the graph's probabilities against scikit-learn's (compile's default)
# Servers get one BLAS/OpenMP thread each: they are pinned to one core, where a second
# thread can only wait for the first.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

console = Console(width=110)


@dataclass(frozen=True)
class Options:
    duration: int  # seconds per point (wrk takes whole seconds)
    warmup: int
    concurrency: tuple[int, ...]
    models: tuple[str, ...]
    servers: tuple[str, ...]
    pin: bool
    grpc: bool = False


@dataclass
class Server:
    """A peer to start: its command line, environment, and how it is spoken to."""

    name: str
    argv: list[str]
    port: int
    protocol: str  # "v1" ({"instances": ...} on /v1/models/{name}:predict), "v2", "bentoml",
    # "grpc" (a ModelInferRequest to the gRPC port)
    read_proba: Callable[[dict[str, Any]], list[float]] | None  # None: a constant answer
    env: dict[str, str] = field(default_factory=dict)
    ready: list[str] = field(default_factory=lambda: ["/v2/health/ready"])
    c1_only: bool = False  # measured at concurrency 1 only
    grpc_port: int | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def measured_at(self, c: int) -> bool:
        return c == 1 or not self.c1_only


@dataclass(frozen=True)
class Point:
    """One wrk run: a server, a model, a concurrency."""

    server: str
    model: str
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    http_errors: int  # responses with status >= 400, as wrk counts them
    socket_errors: int  # connect, read, write errors and timeouts
    load_1m: float  # load average at the end; the server and wrk alone make about 2
    turns: int = 1  # wrk runs it is the mean of (see measure_in_turns)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, as measured."""

    name: str
    measured: str
    met: bool


@dataclass
class Bench:
    """One run of the benchmark: what it needs, and what it has found so far."""

    options: Options
    wrk: str
    h2load: str | None  # with --grpc
    models: dict[str, realistic.Fitted]
    expected: dict[str, list[float]]  # each model's predict_proba of its row, in-process
    folder: Path  # artifacts and request bodies; temporary
    points: list[Point] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def skip(self, what: str, why: str) -> None:
        self.skipped[what] = why
        console.print(f"[red]{what} skipped: {why}[/red]")


# -- models ----------------------------------------------------------------------------------


def write_artifacts(models: dict[str, realistic.Fitted], folder: Path) -> None:
    """The mmserve store, the joblib files of the naive app and BentoML, and MLServer's model
    repository: the joblib file for scikit-learn, the boosters' own files (what mmserve
    stores) for XGBoost and LightGBM."""
    registry = Registry(Store.from_url(str(folder / "store")))
    (folder / "joblib").mkdir()
    for name, fitted in models.items():
        model = fitted.model
        registry.register(model, name=name, input_example=fitted.example, **fitted.options)
        if name in COMPILED:
            continue
        joblib.dump(model, folder / "joblib" / f"{name}.joblib")
        repo = folder / "mlserver" / name
        repo.mkdir(parents=True)
        if name == "xgb":
            model.save_model(repo / "model.ubj")
            runtime, uri = "mlserver_xgboost.XGBoostModel", "./model.ubj"
        elif name == "lgbm":
            model.booster_.save_model(repo / "model.txt")
            runtime, uri = "mlserver_lightgbm.LightGBMModel", "./model.txt"
        else:
            joblib.dump(model, repo / "model.joblib")
            runtime, uri = "mlserver_sklearn.SKLearnModel", "./model.joblib"
        settings = {
            "name": name,
            "implementation": runtime,
            **MLSERVER_BATCH,
            "parameters": {"uri": uri},
        }
        (repo / "model-settings.json").write_text(json.dumps(settings))


# -- tools -----------------------------------------------------------------------------------


def ensure_tool(command: str, package: str) -> str:
    """``command``'s path, installing Debian's ``package`` with apt if it is missing."""
    found = shutil.which(command)
    if found:
        return found
    console.print(f"{command} not found: apt-get install -y {package}")
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(install, capture_output=True, check=True)
    return shutil.which(command) or sys.exit(f"{command} is not on PATH after apt-get install")


def ensure_wrk() -> str:
    return ensure_tool("wrk", "wrk")


def ensure_mlserver() -> Path | None:
    """MLServer's executable in its own venv, installed on first use; None if that fails."""
    executable, stamp = MLSERVER_VENV / "bin" / "mlserver", MLSERVER_VENV / ".pins"
    wanted = "\n".join(MLSERVER_PINS)
    if executable.exists() and stamp.exists() and stamp.read_text() == wanted:
        return executable
    console.print(f"installing {', '.join(MLSERVER_PINS[:3])} into {MLSERVER_VENV} ...")
    log = WORK / "logs" / "mlserver-install.log"
    with log.open("w") as out:
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)],
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_PINS],
        ]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                console.print(f"[red]MLServer skipped: its install failed; see {log}[/red]")
                return None
    stamp.write_text(wanted)
    return executable


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bentoml_peer(python: Path, artifacts: Path) -> Server:
    port = free_port()
    argv, env = bento.bentoml_server(python, artifacts / "joblib", port)
    reader = bento.read_proba
    return Server("bentoml", argv, port, "bentoml", reader, env, ready=[bento.READY_PATH])


def uvicorn_app(name: str, factory: str, env: dict[str, str]) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", f"apps:{factory}"]
    argv += ["--app-dir", str(HERE / "realtime"), "--port", str(port)]
    argv += ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    reader = _naive_proba if factory == "naive" else None
    return Server(name, argv, port, "v1", reader, env)


def mlserver(executable: Path, artifacts: Path, models: tuple[str, ...]) -> Server:
    port, repo = free_port(), artifacts / "mlserver"
    models = tuple(m for m in models if m not in COMPILED)
    settings = {
        "debug": False,  # debug (the default) writes an access-log line per request
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,  # infer in the server process: one process, like the others
    }
    (repo / "settings.json").write_text(json.dumps(settings))
    ready = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]
    return Server(
        "mlserver", [str(executable), "start", str(repo)], port, "v2", _v2_proba, ready=ready
    )


def mmserve(artifacts: Path, batching: bool = True, grpc: bool = False) -> Server:
    port = free_port()
    argv = [str(Path(sys.executable).parent / "mmserve"), "serve", "--port", str(port)]
    argv += ["--log-level", "warning"]
    env = {"MMSERVE_STORE_URL": str(artifacts / "store")}
    if grpc:
        grpc_port = free_port()
        argv += ["--grpc-port", str(grpc_port)]
        return Server(GRPC, argv, port, "grpc", _grpc_proba, env, grpc_port=grpc_port)
    if batching:
        return Server("mmserve", argv, port, "v1", _mmserve_proba, env)
    env["MMSERVE_SERVING__BATCHING"] = "false"
    # Measured at c=1 only: it is there for the c=1 target (what batching adds to an idle
    # model's p50); under load, points without batching would add minutes for no target.
    return Server("mmserve-unbatched", argv, port, "v1", _mmserve_proba, env, c1_only=True)


def build_servers(bench: Bench) -> list[list[Server]]:
    """The servers to start, in groups that run at the same time: the floor, mmserve and
    mmserve-unbatched together, so that their points take turns (the targets compare mmserve
    with the floor at c=64, and with itself unbatched at c=1: measured minutes apart, a
    drift of the shared host would decide them), every other server alone."""
    folder, servers = bench.folder, []
    for name in bench.options.servers:
        if name == "floor":
            servers.append(uvicorn_app("floor", "floor", {}))
        elif name == "naive":
            servers.append(
                uvicorn_app("naive", "naive", {"REALTIME_MODELS": str(folder / "joblib")})
            )
        elif name == "mlserver":
            executable = ensure_mlserver()
            if executable is None:
                bench.skip("mlserver", "its install failed")
            else:
                servers.append(mlserver(executable, folder, bench.options.models))
        elif name == "bentoml":
            python = bento.ensure_bentoml(WORK, WORK / "logs" / "bentoml-install.log")
            if python is None:
                bench.skip("bentoml", "its install failed")
            else:
                servers.append(bentoml_peer(python, folder))
        elif name == "mmserve":
            servers.append(mmserve(folder))
        elif name == "mmserve-unbatched":
            if 1 in bench.options.concurrency:
                servers.append(mmserve(folder, batching=False))
            else:
                bench.skip(name, "it is measured at c=1 only, and --concurrency has no 1")
        elif name == GRPC:
            servers.append(mmserve(folder, grpc=True))
    paired = [s for s in servers if s.name.startswith("mmserve") or s.name == "floor"]
    return [[s] for s in servers if s not in paired] + ([paired] if paired else [])


@contextlib.contextmanager
def running(server: Server, pin: bool) -> Iterator[None]:
    """Start the server in its own process group; kill the whole group however we leave."""
    log = WORK / "logs" / f"{server.name}.log"
    argv = (["taskset", "-c", "0"] if pin else []) + server.argv
    env = {**os.environ, **ONE_THREAD, **server.env}
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(server, process, log)
        yield
    finally:
        stop(process)


@contextlib.contextmanager
def all_running(servers: list[Server], pin: bool) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(running(server, pin))
        yield


def wait_ready(server: Server, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    for path in server.ready:
        while not _answers(server.url(path)):
            if process.poll() is not None:
                raise RuntimeError(f"exited with {process.returncode}; {_tail_of(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after 120 s; {_tail_of(log)}")
            time.sleep(0.2)


def _tail_of(log: Path, lines: int = 3) -> str:
    last = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"{log} ends: " + " | ".join(last) if last else f"{log} is empty"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    # The group also holds any worker processes the server forked.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# -- requests --------------------------------------------------------------------------------


def predict_path(server: Server, model: str) -> str:
    if server.protocol == "grpc":
        return GRPC_METHOD
    if server.protocol == "v2":
        return f"/v2/models/{model}/infer"
    if server.protocol == "bentoml":
        return bento.request_path(model)
    return f"/v1/models/{model}:predict"


def predict_url(server: Server, model: str) -> str:
    if server.protocol == "grpc":
        return f"http://127.0.0.1:{server.grpc_port}{GRPC_METHOD}"
    return server.url(predict_path(server, model))


def body_path(server: Server, model: str, bench: Bench) -> Path:
    return bench.folder / f"body-{server.name}-{model}.json"


def request_body(server: Server, fitted: realistic.Fitted) -> bytes:
    """One row as the server takes it: numbers as a list (a V2 FP32 tensor for MLServer, the
    fastest form it takes), the churn pipeline's mixed columns as an object by name (V2: one
    input per column, decoded into a DataFrame by MLServer's pandas codec)."""
    row: list[Any] | dict[str, Any] = list(fitted.row.values()) if fitted.numeric else fitted.row
    if server.protocol == "grpc":
        return grpc_body(fitted)
    if server.protocol == "bentoml":
        return bento.request_body(fitted.name, row)
    if server.protocol == "v1":
        return json.dumps({"instances": [row]}).encode()
    if fitted.numeric:
        values = list(fitted.row.values())
        inputs = [
            {"name": "input-0", "shape": [1, len(values)], "datatype": "FP32", "data": values}
        ]
        parameters = {}
    else:
        inputs = [_v2_column(field, fitted.row[field.name]) for field in fitted.example.schema]
        parameters = {"content_type": "pd"}
    # MLServer's scikit-learn runtime calls predict() unless predict_proba is asked for.
    body = {"inputs": inputs, "outputs": [{"name": "predict_proba"}], "parameters": parameters}
    return json.dumps(body).encode()


def grpc_body(fitted: realistic.Fitted) -> bytes:
    """One row as a gRPC client (tritonclient) sends it: raw tensors of the registered
    types (one [1, 20] tensor of the numeric set, else one [1] tensor per column), in a
    gRPC frame (no compression, the message's length, the message)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=fitted.name)
    fields = list(fitted.example.schema)
    if fitted.numeric:
        columns = [("input-0", fields[0].type, [1, len(fields)], list(fitted.row.values()))]
    else:
        columns = [(f.name, f.type, [1], [fitted.row[f.name]]) for f in fields]
    for name, arrow, shape, values in columns:
        datatype, _ = v2.tensor_type(arrow)
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        if datatype == "BYTES":
            texts = [str(value).encode() for value in values]
            raw = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
        else:
            little_endian = np.dtype(arrow.to_pandas_dtype()).newbyteorder("<")
            raw = np.asarray(values, dtype=little_endian).tobytes()
        request.raw_input_contents.append(raw)
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _v2_column(field: Any, value: Any) -> dict[str, Any]:
    datatype = {str: "BYTES", float: "FP64", int: "INT64"}[type(value)]
    return {"name": field.name, "shape": [1], "datatype": datatype, "data": [value]}


def _naive_proba(answer: dict[str, Any]) -> list[float]:
    return [float(p) for p in answer["predictions"][0]]


def _mmserve_proba(answer: dict[str, Any]) -> list[float]:
    row = answer["predictions"][0]
    return [float(v) for k, v in row.items() if k.startswith("proba_")]


def _grpc_proba(answer: dict[str, Any]) -> list[float]:
    return [
        float(v) for name, values in answer.items() if name.startswith("proba_") for v in values
    ]


def grpc_answer(server: Server, body: bytes) -> dict[str, Any]:
    """The outputs of the server's answer to a framed ModelInferRequest, by name."""
    import grpc
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import triton_to_np_dtype

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        infer = channel.unary_unary(GRPC_METHOD)
        response = service_pb2.ModelInferResponse.FromString(infer(body[5:], timeout=30))
    return {
        o.name: np.frombuffer(raw, dtype=triton_to_np_dtype(o.datatype)).tolist()
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        if o.datatype != "BYTES"
    }


def _v2_proba(answer: dict[str, Any]) -> list[float]:
    data = [float(p) for p in answer["outputs"][0]["data"]]
    return [1.0 - data[0], data[0]] if len(data) == 1 else data  # a LightGBM Booster: P(1)


def check(server: Server, model: str, body: bytes, expected: list[float]) -> str | None:
    """Why the server's answer to one request is wrong, or None when it is right."""
    if server.protocol == "grpc":
        import grpc

        try:
            return _wrong(server, model, grpc_answer(server, body), expected)
        except grpc.RpcError as err:
            return f"gRPC {err.code()}: {err.details()}"
    request = urllib.request.Request(
        server.url(predict_path(server, model)), body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}: {err.read()[:200]!r}"
    except (OSError, ValueError) as err:
        return f"no JSON answer: {err}"
    return _wrong(server, model, answer, expected)


def _wrong(server: Server, model: str, answer: dict[str, Any], expected: list[float]) -> str | None:
    if server.read_proba is None:
        return None
    got = server.read_proba(answer)
    tolerance = ONNX_TOLERANCE if model in COMPILED else PROBA_TOLERANCE
    if len(got) != len(expected) or not np.allclose(got, expected, rtol=0, atol=tolerance):
        return f"probabilities {got} differ from predict_proba's {expected}"
    return None


# -- load ------------------------------------------------------------------------------------


def run_wrk(
    wrk: str, url: str, body: Path, connections: int, seconds: int, pin: bool
) -> dict[str, Any]:
    argv = (["taskset", "-c", "1"] if pin else []) + [wrk, "-t1", f"-c{connections}"]
    argv += [f"-d{seconds}s", "--timeout", "10s", "-s", str(HERE / "realtime" / "post.lua"), url]
    env = {**os.environ, "WRK_BODY": str(body)}
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish within {seconds + 60} s") from None
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return dict(json.loads(line.removeprefix("WRK_JSON ")))
    said = (done.stderr or done.stdout).strip().splitlines()[:2]
    raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {' | '.join(said)}")


def run_h2load(
    h2load: str, url: str, body: Path, connections: int, seconds: int, pin: bool, log: Path
) -> dict[str, Any]:
    """h2load on the gRPC port, as run_wrk on HTTP: ``connections`` connections of one
    request at a time each; its figures in run_wrk's names (latencies from its log of every
    request). A gRPC error comes as HTTP 200 with a status in its trailers, which h2load does
    not read: the answer is checked before the load (check)."""
    argv = (["taskset", "-c", "1"] if pin else []) + [h2load, "-t1", f"-c{connections}", "-m1"]
    argv += [f"-D{seconds}", "-d", str(body), f"--log-file={log}"]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"h2load did not finish within {seconds + 60} s") from None
    counts = re.search(r"requests: \d+ total.* (\d+) errored, (\d+) timeout", done.stdout)
    if counts is None:
        said = (done.stderr or done.stdout).strip().splitlines()[:2]
        raise RuntimeError(f"h2load printed no result (exit {done.returncode}): {' | '.join(said)}")
    lines = [line.split("\t") for line in log.read_text().splitlines() if line]
    latencies = np.array([int(line[2]) for line in lines], dtype=float)
    statuses = [line[1] for line in lines]
    return {
        "requests": len(lines),
        "duration_us": seconds * 1e6,
        "p50_us": float(np.percentile(latencies, 50)) if len(lines) else 0.0,
        "p99_us": float(np.percentile(latencies, 99)) if len(lines) else 0.0,
        "non_2xx": sum(not status.startswith("2") for status in statuses),
        "connect": 0,
        "read": int(counts[1]),
        "write": 0,
        "timeout": int(counts[2]),
    }


def run_load(server: Server, model: str, c: int, seconds: int, bench: Bench) -> dict[str, Any]:
    """wrk on an HTTP server, h2load on mmserve's gRPC port."""
    url, body, pin = predict_url(server, model), body_path(server, model, bench), bench.options.pin
    if server.protocol == "grpc":
        assert bench.h2load is not None
        with tempfile.TemporaryDirectory(dir=bench.folder) as tmp:  # h2load appends to a log
            return run_h2load(bench.h2load, url, body, c, seconds, pin, Path(tmp) / "h2load.log")
    return run_wrk(bench.wrk, url, body, c, seconds, pin)


def measure(server: Server, model: str, c: int, seconds: int, bench: Bench) -> Point:
    out = run_load(server, model, c, seconds, bench)
    return Point(
        server=server.name,
        model=model,
        concurrency=c,
        requests=out["requests"],
        rps=out["requests"] / (out["duration_us"] / 1e6),
        p50_ms=out["p50_us"] / 1e3,
        p99_ms=out["p99_us"] / 1e3,
        http_errors=out["non_2xx"],
        socket_errors=sum(out[k] for k in ("connect", "read", "write", "timeout")),
        load_1m=round(os.getloadavg()[0], 2),
    )


def measure_in_turns(servers: list[Server], model: str, c: int, bench: Bench) -> list[Point]:
    """One point per server at concurrency c. Servers measured at the same concurrency take
    turns, back to back: TURNS runs each of duration / TURNS seconds, in the order A B B A
    A B B A, so that a steady drift of the shared machine hits each alike. A point is the
    median of its runs (req/s, p50 and p99; requests and errors are summed)."""
    if len(servers) == 1:
        return [measure(servers[0], model, c, bench.options.duration, bench)]
    seconds = max(1, bench.options.duration // TURNS)
    runs: dict[str, list[Point]] = {server.name: [] for server in servers}
    for turn in range(TURNS):
        for server in servers if turn % 2 == 0 else servers[::-1]:
            runs[server.name].append(measure(server, model, c, seconds, bench))
    return [median_point(points) for points in runs.values()]


def median_point(runs: list[Point]) -> Point:
    """The runs' medians: one turn that the host slowed moves it least."""
    return replace(
        runs[-1],
        requests=sum(p.requests for p in runs),
        rps=float(np.median([p.rps for p in runs])),
        p50_ms=float(np.median([p.p50_ms for p in runs])),
        p99_ms=float(np.median([p.p99_ms for p in runs])),
        http_errors=sum(p.http_errors for p in runs),
        socket_errors=sum(p.socket_errors for p in runs),
        turns=len(runs),
    )


def bench_servers(servers: list[Server], bench: Bench) -> None:
    """For each model: check each server's answer and warm it up, then load the servers at
    each concurrency, taking turns where more than one is measured at it."""
    options = bench.options
    for model in options.models:
        serving = [s for s in servers if model not in COMPILED or s.name not in PEERS]
        for server in serving:
            body = request_body(server, bench.models[model])
            body_path(server, model, bench).write_bytes(body)
        ready = [server for server in serving if answers_right(server, model, bench)]
        for server in ready:
            warm_c = max(c for c in options.concurrency if server.measured_at(c))
            run_load(server, model, warm_c, options.warmup, bench)
        for c in options.concurrency:
            at_c = [server for server in ready if server.measured_at(c)]
            for point in measure_in_turns(at_c, model, c, bench):
                bench.points.append(point)
                console.print(progress(point))


def answers_right(server: Server, model: str, bench: Bench) -> bool:
    body = body_path(server, model, bench).read_bytes()
    problem = check(server, model, body, bench.expected[model])
    if problem is not None:
        bench.skip(f"{server.name}/{model}", f"wrong answer: {problem}")
        return False
    agrees = "" if server.read_proba is None else ", with predict_proba's probabilities"
    console.print(f"{server.name:>{NAME_WIDTH}} · {model} · answers 200{agrees}")
    return True


def progress(point: Point) -> str:
    flag = ""
    if point.http_errors or point.socket_errors:
        flag = f" [red]{point.http_errors} HTTP errors, {point.socket_errors} socket errors[/red]"
    return (
        f"{point.server:>{NAME_WIDTH}} · {point.model} · c={point.concurrency:<3}"
        f" {point.rps:9,.0f} req/s  p50 {point.p50_ms:7.2f} ms  p99 {point.p99_ms:7.2f} ms{flag}"
    )


# -- report ----------------------------------------------------------------------------------


Index = dict[tuple[str, str, int], Point]


def results_table(model: str, points: Index, options: Options) -> Table:
    table = Table(
        "c",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "mmserve ÷ server",
        title=f"{model}: one row per request",
    )
    for c in options.concurrency:
        ours = points.get(("mmserve", model, c))
        for name in options.servers:
            point = points.get((name, model, c))
            if point is None:
                continue
            ratio = f"{ours.rps / point.rps:.2f}x" if ours and name != "mmserve" else ""
            errors = point.http_errors + point.socket_errors
            table.add_row(
                str(c),
                name,
                f"{point.rps:,.0f}",
                f"{point.p50_ms:.2f}",
                f"{point.p99_ms:.2f}",
                f"[red]{errors}[/red]" if errors else "0",
                ratio,
            )
        table.add_section()
    return table


def grpc_table(points: Index, options: Options) -> Table | None:
    """mmserve over gRPC against itself over HTTP (V1 JSON, its row above), same run."""
    table = Table(
        "model", "c", "gRPC req/s", "HTTP req/s", "gRPC ÷ HTTP", "p50 ms gRPC/HTTP",
        "p99 ms gRPC/HTTP", title="mmserve: gRPC (V2, raw tensors) against HTTP (V1 JSON)",
    )  # fmt: skip
    for model in options.models:
        for c in options.concurrency:
            ours, http = points.get((GRPC, model, c)), points.get(("mmserve", model, c))
            if ours is None or http is None:
                continue
            table.add_row(
                model,
                str(c),
                f"{ours.rps:,.0f}",
                f"{http.rps:,.0f}",
                f"{ours.rps / http.rps:.2f}x",
                f"{ours.p50_ms:.2f} / {http.p50_ms:.2f}",
                f"{ours.p99_ms:.2f} / {http.p99_ms:.2f}",
            )
    return table if table.row_count else None


def targets(points: Index, models: tuple[str, ...]) -> list[Target]:
    """The issue's targets for mmserve that this run has the figures for."""
    found = [
        _throughput(points, "lr", "floor", 1.0),
        _throughput(points, "lr-df", "floor", 0.8),
        _throughput(points, "churn-onnx", "floor", 0.7),
    ]
    for model in models:
        found += [_throughput(points, model, "mlserver", 3.0), _tail(points, model, "mlserver")]
        found += [_throughput(points, model, "bentoml", 1.0), _tail(points, model, "bentoml")]
    found += [_batching_cost(points, model, 0.2) for model in models]
    return [target for target in found if target is not None]


def _throughput(points: Index, model: str, peer: str, times: float) -> Target | None:
    ours, theirs = points.get(("mmserve", model, TARGET_C)), points.get((peer, model, TARGET_C))
    if ours is None or theirs is None:
        return None
    ratio = ours.rps / theirs.rps
    name = f"{model} c={TARGET_C}: req/s >= {times:g}x {peer}'s"
    return Target(name, f"{ratio:.2f}x", ratio >= times)


def _tail(points: Index, model: str, peer: str) -> Target | None:
    ours, theirs = points.get(("mmserve", model, TARGET_C)), points.get((peer, model, TARGET_C))
    if ours is None or theirs is None:
        return None
    measured = f"{ours.p99_ms:.1f} vs {theirs.p99_ms:.1f} ms"
    return Target(
        f"{model} c={TARGET_C}: p99 below {peer}'s", measured, ours.p99_ms < theirs.p99_ms
    )


def _batching_cost(points: Index, model: str, slack_ms: float) -> Target | None:
    """At c=1 batching adds < slack_ms to p50: mmserve against itself with batching off."""
    ours, unbatched = points.get(("mmserve", model, 1)), points.get(("mmserve-unbatched", model, 1))
    if ours is None or unbatched is None:
        return None
    delta = ours.p50_ms - unbatched.p50_ms
    measured = f"{delta:+.2f} ms ({ours.p50_ms:.2f} vs {unbatched.p50_ms:.2f})"
    name = f"{model} c=1: batching adds < {slack_ms:g} ms to p50"
    return Target(name, measured, delta < slack_ms)


def targets_table(found: list[Target]) -> Table:
    table = Table("target", "measured", "result", title="the issue's targets for mmserve")
    for target in found:
        verdict = "PASS" if target.met else "[bold red]MISS[/bold red]"
        table.add_row(target.name, target.measured, verdict)
    return table


def machine() -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    return {
        "host": platform.node(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "wrk": wrk,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def write_json(bench: Bench, found: list[Target], load_at_start: float) -> None:
    document = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": {**machine(), "load_average_1m_at_start": round(load_at_start, 2)},
        "options": asdict(bench.options),
        "mlserver": {"pins": list(MLSERVER_PINS), **MLSERVER_BATCH},
        "bentoml": {"pins": list(bento.pins())},
        "points": [asdict(p) for p in bench.points],
        "targets": [asdict(t) for t in found],
        "skipped": bench.skipped,
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


# -- main ------------------------------------------------------------------------------------


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up")
    parser.add_argument("--duration", type=int, help="seconds per point (default 10)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per server and model")
    parser.add_argument("--concurrency", default="1,64", help="open connections, e.g. 1,16,64")
    parser.add_argument("--models", default=",".join(MODELS), help=f"of: {', '.join(MODELS)}")
    parser.add_argument("--only", default=",".join(SERVERS), help=f"of: {', '.join(SERVERS)}")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk to cores")
    parser.add_argument(
        "--grpc", action="store_true", help="also mmserve over gRPC (h2load), against its HTTP"
    )
    args = parser.parse_args()
    models, servers = _names(args.models, MODELS, parser), _names(args.only, SERVERS, parser)
    if args.grpc:
        servers += (GRPC,)
    return Options(
        duration=args.duration or (3 if args.quick else 10),
        warmup=args.warmup or (1 if args.quick else 3),
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        models=models,
        servers=servers,
        pin=not args.no_pin and (os.cpu_count() or 1) >= 2,
        grpc=args.grpc,
    )


def _names(given: str, known: tuple[str, ...], parser: argparse.ArgumentParser) -> tuple[str, ...]:
    names = tuple(n.strip() for n in given.split(",") if n.strip())
    unknown = set(names) - set(known)
    if unknown:
        parser.error(f"unknown {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    return tuple(n for n in known if n in names)  # in the canonical order


def run(options: Options, folder: Path) -> Bench:
    models = realistic.fit(options.models)
    expected = {name: fitted.expected() for name, fitted in models.items()}
    h2load = ensure_tool("h2load", "nghttp2-client") if options.grpc else None  # gRPC load
    bench = Bench(options, ensure_wrk(), h2load, models, expected, folder)
    write_artifacts(models, folder)
    for group in build_servers(bench):
        try:
            with all_running(group, options.pin):
                bench_servers(group, bench)
        except RuntimeError as err:
            bench.skip("+".join(server.name for server in group), str(err))
    return bench


def main() -> None:
    # Ctrl-C and SIGTERM unwind through ``running``, which stops every server started (SIGINT
    # too, as a shell starting us in the background may have set it to be ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = parse_options()
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    pinning = "servers on core 0, wrk on core 1" if options.pin else "not pinned"
    console.print(f"{platform.node()} · {os.cpu_count()} cores · {pinning}")
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(f"[yellow]load average {load:.2f}: something else is using the CPUs[/yellow]")
    with tempfile.TemporaryDirectory(prefix="realtime-") as tmp:
        bench = run(options, Path(tmp))
    index = {(p.server, p.model, p.concurrency): p for p in bench.points}
    for model in options.models:
        if any(key[1] == model for key in index):
            console.print(results_table(model, index, options))
    grpc_ratio = grpc_table(index, options)
    if grpc_ratio is not None:
        console.print(grpc_ratio)
    found = targets(index, options.models)
    console.print(targets_table(found))
    write_json(bench, found, load)
    console.print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        console.print("interrupted; every server it started is stopped")
        sys.exit(130)
