"""The demo recipes, registered through the real registry (local folder and S3) and served."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from models import RECIPES, Recipe, _server, churn, register
from models import _examples as examples
from models._modes import every_mode
from models._redis import redis_server
from models._server import DemoError, serve
from models._stream import Consumer, streamers
from models.credit_prep import features
from serving.registry import Registry
from serving.settings import Settings
from serving.store import Store

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
OUTPUTS = {
    "churn": ["label", "proba_0", "proba_1"],
    "fraud": ["label", "proba_0", "proba_1"],
    "house_prices": ["prediction"],
    "credit": ["label", "proba_0", "proba_1"],
    "risk": ["prediction"],
    "credit-prep": ["debt_to_income", "log_income", "years_employed"],
    "fraud-onnx": ["label", "proba_0", "proba_1"],
}
FLAVORS = {"credit": "xgboost", "risk": "lightgbm", "credit-prep": "python", "fraud-onnx": "onnx"}
# A multiple of the registered row block, so the predictor calls the model on exactly the
# rows the direct sklearn call below sees.
ROWS = 16

each_recipe = pytest.mark.parametrize("recipe", RECIPES, ids=[r.NAME for r in RECIPES])


_trained: dict[str, Any] = {}


def trained(recipe: Recipe) -> Any:
    """A second, independent training run: equal answers also pin that training is deterministic."""
    if recipe.NAME not in _trained:
        _trained[recipe.NAME] = recipe.train()[0]
    return _trained[recipe.NAME]


def expected(model: Any, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The output columns, computed by calling the estimator (or the code) directly."""
    if isinstance(model, Path):  # a folder of code: its class, called as the runtime does
        derived = features.Prep().predict(pa.Table.from_pandas(frame, preserve_index=False))
        return {name: derived[name].to_numpy() for name in derived.column_names}
    if isinstance(model, onnx.ModelProto):  # a graph: onnxruntime's own session
        session = onnxruntime.InferenceSession(model.SerializeToString())
        feed = {session.get_inputs()[0].name: frame.to_numpy().astype(np.float32)}
        label, proba = session.run(None, feed)
        return {"label": label, "proba_0": proba[:, 0], "proba_1": proba[:, 1]}
    if not hasattr(model, "predict_proba"):
        return {"prediction": model.predict(frame)}
    proba = model.predict_proba(frame)
    columns = {f"proba_{c}": proba[:, i] for i, c in enumerate(model.classes_)}
    return {"label": model.predict(frame), **columns}


def assert_scored_exactly(scored: pa.Table, rows: pa.Table, recipe: Recipe) -> None:
    want = expected(trained(recipe), rows.select(recipe.FEATURES).to_pandas())
    assert scored.column_names == [recipe.ID_COLUMN, *want]
    assert scored[recipe.ID_COLUMN].equals(rows[recipe.ID_COLUMN])
    for name, values in want.items():
        assert np.array_equal(scored[name].to_numpy(), values), name


@each_recipe
def test_each_recipe_registers_version_1_as_production(registry: Registry, recipe: Recipe) -> None:
    mv = register(recipe, registry)
    assert (mv.name, mv.version, mv.ref) == (recipe.NAME, 1, f"{recipe.NAME}:1")
    assert registry.aliases(recipe.NAME) == {"production": 1}
    assert registry.resolve(f"{recipe.NAME}@production") == (recipe.NAME, 1)
    assert mv.outputs == OUTPUTS[recipe.NAME]
    assert mv.tags["recipe"] == recipe.__name__
    assert mv.flavor == FLAVORS.get(recipe.NAME, "sklearn-skops")
    assert mv.approval == "approved"


@each_recipe
def test_the_id_column_is_not_a_model_input(registry: Registry, recipe: Recipe) -> None:
    mv = register(recipe, registry)
    assert [f.name for f in mv.inputs] == recipe.FEATURES
    assert recipe.sample(3, seed=0).column_names == [recipe.ID_COLUMN, *recipe.FEATURES]


@each_recipe
def test_served_predictions_equal_the_estimator_exactly(registry: Registry, recipe: Recipe) -> None:
    register(recipe, registry)
    rows = recipe.sample(ROWS, seed=7)
    predictor = registry.load(f"{recipe.NAME}@production")
    scored = predictor.predict(rows, passthrough=[recipe.ID_COLUMN])
    assert_scored_exactly(scored, rows, recipe)


@each_recipe
def test_a_row_alone_is_scored_as_in_a_batch(registry: Registry, recipe: Recipe) -> None:
    register(recipe, registry)
    predictor = registry.load(f"{recipe.NAME}@production")
    rows = recipe.sample(5, seed=11)
    batch = predictor.predict(rows, passthrough=[recipe.ID_COLUMN])
    alone = [predictor.predict(rows.slice(i, 1), passthrough=[recipe.ID_COLUMN]) for i in range(5)]
    assert pa.concat_tables(alone).equals(batch)


def test_churn_scores_a_payment_method_it_never_saw(registry: Registry) -> None:
    register(churn, registry)
    rows = churn.sample(ROWS, seed=3)
    unseen = pa.array(["crypto"] * ROWS)
    rows = rows.set_column(rows.schema.get_field_index("payment_method"), "payment_method", unseen)
    scored = registry.load("churn").predict(rows, passthrough=["customer_id"])
    assert_scored_exactly(scored, rows, churn)


@each_recipe
def test_samples_are_reproducible_with_unique_ids(recipe: Recipe) -> None:
    rows = recipe.sample(50, seed=3)
    assert rows.equals(recipe.sample(50, seed=3))
    assert not rows.equals(recipe.sample(50, seed=4))
    assert pc.count_distinct(rows[recipe.ID_COLUMN]).as_py() == 50


@each_recipe
def test_training_returns_an_example_of_feature_columns_only(recipe: Recipe) -> None:
    _, example = recipe.train()
    assert example.column_names == recipe.FEATURES
    assert example.num_rows > 0


def run_demo(store_url: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m models`` run in ``cwd`` (where it leaves ``demo/``), as ``make demo`` runs
    it: the venv's python, its ``bin`` not on the PATH."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MMSERVE_")}
    clean.update(MMSERVE_STORE_URL=store_url, COLUMNS="200", PYTHONPATH=str(ROOT), **env)
    clean["PATH"] = os.pathsep.join(
        p for p in clean["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent
    )
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "models"],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def readme_commands() -> list[str]:
    """Every ``mmserve`` command of the README's shell blocks, as one line each."""
    commands = []
    for block in re.findall(r"```\n(.*?)```", README, re.S):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if "mmserve " in command and not command.lstrip().startswith(("#", "-", "endpoints:")):
                commands.append(command.split(" #")[0].strip())
    return commands


def test_the_readme_commands_use_the_files_the_demo_leaves_in_its_folder() -> None:
    # A new user ran them after make demo: churn.skops, rows.csv... did not exist.
    assert Path("demo") == examples.FOLDER
    used = [c for c in readme_commands() if any(name in c for name in examples.FILES)]
    assert len(used) >= 5
    for command in used:
        for word in command.split():
            if any(word.endswith(name) for name in examples.FILES):
                assert word.startswith("demo/"), command
    for name in examples.FILES:
        assert any(f"demo/{name}" in command for command in used), name
    ids = examples.customers()[churn.ID_COLUMN].to_pylist()
    asked = re.search(r"curl -s localhost:8080/v1/models/churn/precomputed/(\S+)", README)
    assert asked is not None and asked[1] in ids


def test_the_quick_start_says_how_to_get_mmserve_on_the_path() -> None:
    start = README.index("## Quick start")
    after = README[README.index("```", README.index("```", start) + 3) + 3 :]
    said = after[: after.index("\n## ")]
    assert "source .venv/bin/activate" in said
    assert "export PATH=$PWD/.venv/bin:$PATH" in said
    assert "`demo/`" in said


def table_rows(output: str, *cells: str) -> list[str]:
    """The lines of a printed table whose cells match the patterns ``cells``."""
    pattern = re.compile(r"│ " + r" +│ +".join(cells) + r" +│")
    return [line for line in output.splitlines() if pattern.fullmatch(line)]


@pytest.mark.slow
def test_python_m_models_answers_the_same_in_every_mode(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    first = run_demo(store_url, tmp_path)
    # A broker in the environment is not the demo's: its server still runs jobs itself.
    second = run_demo(store_url, tmp_path, MMSERVE_BROKER_URL="redis://127.0.0.1:9/0")
    for run, version in ((first, 1), (second, 2)):
        assert (run.returncode, run.stderr) == (0, "")
        for recipe in RECIPES:
            name = recipe.NAME
            assert f"{name}@production -> {name}:{version}, loaded in" in run.stdout
            # Only the first request loads the model (*: cold start); every answer is equal.
            assert len(table_rows(run.stdout, name, "V1", "5", "200", r"[\d.]+\*", "yes")) == 1
            for protocol in ("V2", "SageMaker CSV"):
                assert (
                    len(table_rows(run.stdout, name, protocol, "1", "200", r"[\d.]+", "yes")) == 1
                )
            job = (name, "[0-9a-f]{8}…", "succeeded", r"[\d.]+", "yes")
            assert len(table_rows(run.stdout, *job)) == 1
            run_row = (name, "[0-9a-f]{8}…", "20,000", "4", r"[\d,]+", "yes")
            assert len(table_rows(run.stdout, *run_row)) == 1
            stream = (name, rf"demo\.{name}\.events → demo\.{name}\.scores", "5", r"[\d.]+")
            assert len(table_rows(run.stdout, *stream, "yes")) == 1
            every = (name, "500", *[r"[\d.]+"] * 4, "yes")  # real time, async, batch, streaming
            assert len(table_rows(run.stdout, *every)) == 1
        assert "With MMSERVE_BROKER_URL set, these jobs go to Celery workers" in run.stdout
        parity = (
            r"all modes agree: 500 rows of each of 7 models, real time [\d.]+ s, async [\d.]+ s, "
            r"batch [\d.]+ s, streaming [\d.]+ s: identical"
        )
        assert len(re.findall(parity, run.stdout)) == 1
        done = "done: 7 models registered, 35 rows scored, 21 real-time answers identical, "
        batch = "140,000 batch rows identical"
        streaming = "35 stream outputs identical, every mode agrees on 3,500 rows"
        pipeline = "the pipeline agrees in 3 modes"
        files = "20 PNG files answered alike raw, in base64 and as jobs"
        texts = "an image and 20 texts answered alike in every way sent"
        assert (
            f"{done}7 jobs succeeded, {batch}, {streaming}, {pipeline}, {files}, {texts} in"
            in run.stdout
        )
        # PNG digits through digits-png (Pillow, in your code) then digits: 19 of 20 right.
        for way in ("V1 b64 cells", "raw PNG bodies", "async file jobs"):
            assert len(table_rows(run.stdout, way, "20", r"[\d.]+", "19", "yes")) == 1
        server = re.search(r"mmserve serve answers at (http://\S+)", run.stdout)
        assert server is not None
        with pytest.raises(URLError):  # stopped with the demo
            urlopen(f"{server[1]}/v2/health/live", timeout=5)
        redis_port = re.search(
            r"mmserve stream consumes, one per model, on redis://[\d.]+:(\d+)/0", run.stdout
        )
        assert redis_port is not None
        with pytest.raises(OSError):  # its Redis too
            socket.create_connection(("127.0.0.1", int(redis_port[1])), timeout=5).close()
    registry = Registry(Store.from_url(store_url))
    # digits, upscale and support: sections of their own
    names = [*(r.NAME for r in RECIPES), "digits", "digits-png", "upscale", "support"]
    assert registry.models() == sorted(names)
    assert all(registry.aliases(name) == {"production": 2} for name in names)
    # Its last lines say how to get mmserve on the PATH, and where the README's files are.
    venv = Path(sys.prefix)
    assert first.stdout.splitlines()[-4:] == [
        f"mmserve is in {venv / 'bin'}, not on your PATH: run",
        f"  source {venv / 'bin' / 'activate'}",
        f'  (or: export PATH="{venv / "bin"}:$PATH")',
        f"The README's commands use the files in demo/: {', '.join(examples.FILES)}",
    ]
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted(examples.FILES)
    # The README's commands that need no server run as written, in the demo's folder.
    env = {**os.environ, "MMSERVE_STORE_URL": store_url, "COLUMNS": "200"}
    offline = [c for c in readme_commands() if re.match(r"mmserve (models register|predict) ", c)]
    assert len(offline) == 5
    for command in offline:
        words = re.sub(r" \[.*?\]", "", command).split()[1:]  # without its [optional] parts
        argv = [Path(sys.executable).with_name("mmserve"), *words]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr)
    assert registry.version_numbers("churn") == [1, 2, 3]
    assert registry.version_numbers("legacy") == [1]
    assert registry.version_numbers("credit") == [1, 2, 3]
    assert registry.get("credit:3").flavor == "xgboost"
    compiled = registry.get("churn-onnx:1")  # demo/churn.skops, compiled (--compile onnx)
    assert compiled.flavor == "onnx" and compiled.compiled is not None
    assert compiled.compiled.rows_checked == 5


def test_the_demo_server_stops_when_the_demo_fails(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="a section failed"), serve(settings(tmp_path)) as server:
        with urlopen(f"{server.url}/v2/health/ready", timeout=5) as ready:
            assert ready.status == 200
        raise DemoError("a section failed")
    with pytest.raises(URLError):
        urlopen(f"{server.url}/v2/health/live", timeout=5)


def test_a_demo_server_that_exits_at_start_is_reported_with_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(_server, "_free_port", lambda: port)
        with pytest.raises(DemoError) as raised, serve(settings(tmp_path)):
            pass
    first, *tail = str(raised.value).splitlines()
    assert first == "mmserve serve exited with code 3 at start; its last output:"
    assert tail[-1].endswith(f"('127.0.0.1', {port}): address already in use")


def test_a_stream_consumer_that_exits_at_start_is_reported_with_its_output(
    tmp_path: Path,
) -> None:
    nope = [Consumer("nope", "nope@production", "id")]
    with (
        redis_server() as url,
        pytest.raises(DemoError) as raised,
        streamers(settings(tmp_path), url, nope),
    ):
        pass
    assert str(raised.value).splitlines() == [
        "mmserve stream (nope@production) exited with code 1 at start; its last output:",
        "  error: model 'nope' is not registered",
    ]


@pytest.mark.slow
def test_real_time_async_batch_and_streaming_answer_500_rows_identically(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, store_url=str(tmp_path / "store"))
    registry = Registry.from_settings(settings)
    for recipe in RECIPES:
        register(recipe, registry)
    consumers = [Consumer(r.NAME, f"{r.NAME}@production", r.ID_COLUMN) for r in RECIPES]
    with ExitStack() as stack:
        server = stack.enter_context(serve(settings))
        streams = stack.enter_context(
            streamers(settings, stack.enter_context(redis_server()), consumers)
        )
        for recipe in RECIPES:
            ref, rows = f"{recipe.NAME}@production", recipe.sample(500, seed=99)
            local = registry.load(ref).predict(rows.select(recipe.FEATURES))
            scored = every_mode(
                server, streams[recipe.NAME], ref, rows, recipe.ID_COLUMN, local.schema, tmp_path
            )
            assert list(scored) == ["real time", "async", "batch", "streaming"]
            answers = {mode: s.answers for mode, s in scored.items()}
            assert answers == dict.fromkeys(scored, local.to_pylist()), recipe.NAME
            assert len(answers["streaming"]) == 500
            assert list(answers["streaming"][0]) == OUTPUTS[recipe.NAME]


def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=str(tmp_path / "store"))
