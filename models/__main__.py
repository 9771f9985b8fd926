"""``python -m models`` (``make demo``): register every demo model, then put it to work in
every mode: in process, real time over HTTP, asynchronous jobs, batch, streaming; and
last, the same rows through all of them, every answer identical. It leaves the files the
README's commands use in ``demo/`` and says how to get ``mmserve`` on the PATH.

The demo is a list of sections run in order. Each gets the :class:`Demo` (console,
registry, the one ``mmserve serve`` and the ``mmserve stream`` consumers the sections
share), prints
its part and returns a phrase for the closing summary; a new mode adds its section to
``SECTIONS``.
"""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Column, Table

from models import RECIPES, Recipe, applications, credit, digits, register, support
from models import _examples as examples
from models._modes import MODES, Scored, asynchronous, batch, every_mode
from models._redis import redis_server
from models._server import JOB_TIMEOUT_S, DemoError, Predictions, Reply, Server, serve
from models._stream import Consumer, Streamer, streamers
from serving.endpoints.catalog import Endpoints
from serving.endpoints.config import Endpoint
from serving.endpoints.pipeline import Pipeline
from serving.errors import MMServeError
from serving.registry import Registry
from serving.settings import Settings

ALIAS = "production"
SAMPLE_ROWS = 5
SAMPLE_SEED = 2024
BATCH_ROWS = 20_000
PARITY_ROWS = 500
PIPELINE = "credit-pipeline"
DIGIT_FILES = 20
SUPPORT_MESSAGES = 20
UPSCALE = Path(__file__).with_name("upscale")  # the upscaler's folder: your own code


@dataclass
class Demo:
    """What each section gets. The server starts when a section first asks for it and
    stops when the demo ends, however it ends."""

    console: Console
    registry: Registry
    settings: Settings
    stack: ExitStack
    _server: Server | None = field(default=None, init=False)
    _streamers: dict[str, Streamer] | None = field(default=None, init=False)

    def server(self) -> Server:
        if self._server is None:
            self._server = self.stack.enter_context(serve(self.settings))
            self.console.print(f"[bold]mmserve serve[/] answers at {self._server.url}\n")
        return self._server

    def streamers(self) -> dict[str, Streamer]:
        """One ``mmserve stream`` per model, by model name, on a throwaway Redis."""
        if self._streamers is None:
            url = self.stack.enter_context(redis_server())
            consumers = [Consumer(r.NAME, _ref(r), r.ID_COLUMN) for r in RECIPES]
            self._streamers = self.stack.enter_context(streamers(self.settings, url, consumers))
            self.console.print(f"[bold]mmserve stream[/] consumes, one per model, on {url}\n")
        return self._streamers


Section = Callable[[Demo], str]


def register_models(demo: Demo) -> str:
    """Train each recipe and register it under the ``production`` alias."""
    demo.console.rule("Register")
    demo.console.print(f"Each model trained, stored and registered under the alias {ALIAS}:")
    table = Table("model", "runtime", "task", _right("inputs"), "outputs", _right("seconds"))
    for recipe in RECIPES:
        started = time.perf_counter()
        mv = register(recipe, demo.registry, alias=ALIAS)
        seconds = time.perf_counter() - started
        outputs = ", ".join(mv.outputs)
        cells = (mv.ref, mv.flavor, mv.task, str(len(mv.inputs)), outputs, f"{seconds:.2f}")
        table.add_row(*cells)
    demo.console.print(table)
    return f"{len(RECIPES)} models registered"


def predict_samples(demo: Demo) -> str:
    """Load each model through its alias and score a few sample rows, in process."""
    demo.console.rule("Predict")
    for recipe in RECIPES:
        _show_predictions(demo.console, demo.registry, recipe)
    return f"{SAMPLE_ROWS * len(RECIPES)} rows scored"


def serve_real_time(demo: Demo) -> str:
    """Send the sample rows to the server in each protocol; each answer must equal the
    in-process one exactly."""
    demo.console.rule("Real time")
    server = demo.server()
    demo.console.print("The sample rows in each protocol, compared with the in-process answers:")
    table = Table("model", "protocol", _right("rows"), _right("HTTP"), _right("latency ms"))
    table.add_column("same as in-process")
    count, problems = 0, []
    for recipe in RECIPES:
        rows = _features(recipe)
        local = demo.registry.load(_ref(recipe)).predict(rows).to_pylist()
        exchanges = _each_protocol(server, recipe, rows, outputs=list(local[0]))
        for i, (protocol, sent, reply, answer) in enumerate(exchanges):
            equal = answer == local[:sent]
            cells = (recipe.NAME, protocol, str(sent), _status(reply), _latency(reply), _yes(equal))
            table.add_row(*cells, end_section=i == len(exchanges) - 1)
            if not equal:
                problems.append(f"{recipe.NAME} over {protocol}: {_what_differs(reply)}")
        count += len(exchanges)
    demo.console.print(table)
    demo.console.print("* cold start: the request loaded the model", style="dim")
    _fail_on(problems, f"of {count} real-time answers differ from the in-process ones")
    return f"{count} real-time answers identical"


def run_jobs(demo: Demo) -> str:
    """Submit each model's sample rows as a CSV job, wait for it, and compare its answer
    with the real-time one."""
    demo.console.rule("Asynchronous")
    server = demo.server()
    demo.console.print("Each model's sample rows as a CSV job, run by the server itself:")
    jobs = [(recipe, _submit(server, recipe)) for recipe in RECIPES]  # all queued at once
    table = Table("model", "job", "status", _right("submit → done ms"), "same as real time")
    problems = []
    for recipe, job_id in jobs:
        job = server.wait_job(job_id)
        answer = server.job_result(job_id)[1] if job["status"] == "succeeded" else None
        realtime = server.predict_v1(_ref(recipe), _features(recipe))[1]
        equal = answer is not None and answer == realtime
        table.add_row(recipe.NAME, f"{job_id[:8]}…", job["status"], _duration(job), _yes(equal))
        if not equal:
            problems.append(f"{recipe.NAME} job {job_id}: {_why(job)}")
    demo.console.print(table)
    demo.console.print(
        "With MMSERVE_BROKER_URL set, these jobs go to Celery workers (mmserve worker).",
        style="dim",
    )
    _fail_on(problems, f"of {len(jobs)} jobs went wrong")
    return f"{len(jobs)} jobs succeeded"


def transform_datasets(demo: Demo) -> str:
    """Score a dataset of each model (parquet, in a temporary folder) as a batch transform
    started over HTTP; every row's answer must equal the in-process one."""
    demo.console.rule("Batch transform")
    server = demo.server()
    folder = Path(demo.stack.enter_context(tempfile.TemporaryDirectory(prefix="mmserve-demo-")))
    demo.console.print(
        f"{BATCH_ROWS:,} rows of each model's input as parquet, POST /v1/batch-jobs, "
        "the parts compared with the in-process answers:"
    )
    table = Table("model", "run", _right("rows"), _right("parts"), _right("rows/s"))
    table.add_column("same as in-process")
    problems = []
    for recipe in RECIPES:
        rows = recipe.sample(BATCH_ROWS, SAMPLE_SEED + 1)
        source, scores = folder / f"{recipe.NAME}.parquet", folder / f"{recipe.NAME}-scores"
        pq.write_table(rows, source, row_group_size=BATCH_ROWS // 4)
        spec = {"model": _ref(recipe), "input": str(source), "output": str(scores),
                "id_column": recipe.ID_COLUMN, "partition_rows": BATCH_ROWS // 4}  # fmt: skip
        reply = server.start_batch(spec)
        if reply.status != 202:
            raise DemoError(f"starting the {recipe.NAME} batch run answered {_error(reply)}")
        run = server.wait_batch(reply.json()["status_url"])
        local = demo.registry.load(_ref(recipe)).predict(rows, passthrough=[recipe.ID_COLUMN])
        equal = run["status"] == "succeeded" and pq.read_table(scores).equals(local)
        rate = f"{run['rows_per_s']:,}" if run["rows_per_s"] else "-"
        cells = (recipe.NAME, f"{run['run_id'][:8]}…", f"{run['rows']:,}", str(run["parts"]))
        table.add_row(*cells, rate, _yes(equal))
        if not equal:
            why = run["error"] or f"{run['status']}, answers differ"
            problems.append(f"{recipe.NAME} run {run['run_id']}: {why}")
    demo.console.print(table)
    demo.console.print(
        "The same from the command line: mmserve batch run --model … --input … --output …",
        style="dim",
    )
    _fail_on(problems, f"of {len(RECIPES)} batch runs went wrong")
    return f"{BATCH_ROWS * len(RECIPES):,} batch rows identical"


def stream_events(demo: Demo) -> str:
    """Add each model's sample rows as events to a Redis stream that a real ``mmserve
    stream`` consumes; every output read back must equal the in-process answer."""
    demo.console.rule("Streaming")
    streams = demo.streamers()
    demo.console.print("Each model's sample rows XADDed as events, the outputs read back:")
    table = Table("model", "source → sink", _right("events"), _right("event → output ms"))
    table.add_column("same as in-process")
    problems = []
    for recipe in RECIPES:
        rows = recipe.sample(SAMPLE_ROWS, SAMPLE_SEED)
        local = demo.registry.load(_ref(recipe)).predict(rows.select(recipe.FEATURES))
        stream = streams[recipe.NAME]
        answers, seconds = stream.score(rows, local.schema)
        equal = answers == local.to_pylist()
        route = f"{stream.consumer.source} → {stream.consumer.sink}"
        table.add_row(recipe.NAME, route, str(rows.num_rows), f"{seconds * 1000:.1f}", _yes(equal))
        if not equal:
            problems.append(f"{recipe.NAME}: the outputs differ from the in-process answers")
    demo.console.print(table)
    demo.console.print(
        "The same by hand: mmserve stream --model … --source … --sink … --group …", style="dim"
    )
    _fail_on(problems, f"of {len(RECIPES)} streams answered differently")
    return f"{SAMPLE_ROWS * len(RECIPES)} stream outputs identical"


def every_mode_agrees(demo: Demo) -> str:
    """Score the same rows of each model in real time, as an async job, as a batch
    transform and as stream events; every answer must equal the in-process one."""
    demo.console.rule("Every mode")
    server, streams = demo.server(), demo.streamers()
    folder = Path(demo.stack.enter_context(tempfile.TemporaryDirectory(prefix="mmserve-demo-")))
    demo.console.print(f"The same {PARITY_ROWS} rows of each model in every mode:")
    table = Table("model", _right("rows"), *(_right(f"{mode} ms") for mode in MODES), "identical")
    took = dict.fromkeys(MODES, 0.0)
    problems = []
    for recipe in RECIPES:
        rows = recipe.sample(PARITY_ROWS, SAMPLE_SEED + 2)
        local = demo.registry.load(_ref(recipe)).predict(rows.select(recipe.FEATURES))
        stream, ref = streams[recipe.NAME], _ref(recipe)
        scored = every_mode(server, stream, ref, rows, recipe.ID_COLUMN, local.schema, folder)
        differ = [mode for mode, s in scored.items() if s.answers != local.to_pylist()]
        for mode, s in scored.items():
            took[mode] += s.seconds
        cells = [f"{scored[mode].seconds * 1000:.1f}" for mode in MODES]
        table.add_row(recipe.NAME, str(rows.num_rows), *cells, _yes(not differ))
        problems += [f"{recipe.NAME} in {mode}: answers differ from in-process" for mode in differ]
    demo.console.print(table)
    _fail_on(problems, "modes answered differently")
    times = ", ".join(f"{mode} {took[mode]:.2f} s" for mode in MODES)
    demo.console.print(
        f"[green]all modes agree[/]: {PARITY_ROWS} rows of each of {len(RECIPES)} models, "
        f"{times}: identical"
    )
    return f"every mode agrees on {PARITY_ROWS * len(RECIPES):,} rows"


def pipeline(demo: Demo) -> str:
    """Raw applications through the pipeline ``credit-prep`` (the user's own Python code)
    then ``credit`` (XGBoost): as an endpoint in real time, as a job and as a batch run of
    the chain; every answer must equal the two models applied by hand."""
    demo.console.rule("A pipeline: your code, then XGBoost")
    server = demo.server()
    steps = [f"{applications.NAME}@{ALIAS}", f"{credit.NAME}@{ALIAS}"]
    Endpoints(demo.registry.store).apply_one(PIPELINE, Endpoint(pipeline=steps))
    rows = applications.sample(PARITY_ROWS, SAMPLE_SEED + 3)
    raw = rows.drop_columns([applications.ID_COLUMN])
    derived = demo.registry.load(steps[0]).predict(raw)
    merged = raw.select([c for c in raw.column_names if c not in derived.column_names])
    for name in derived.column_names:
        merged = merged.append_column(name, derived[name])
    by_hand = demo.registry.load(steps[1]).predict(merged).to_pylist()
    demo.console.print(
        f"endpoint {PIPELINE}: {' → '.join(steps)}; {PARITY_ROWS} raw applications, "
        "compared with both models applied by hand:"
    )
    folder = Path(demo.stack.enter_context(tempfile.TemporaryDirectory(prefix="mmserve-demo-")))
    chain = ",".join(steps)
    scored = {
        "real time (endpoint)": _endpoint_answers(server, PIPELINE, raw.to_pylist()),
        "async (chain)": asynchronous(server, chain, raw),
        "batch (chain)": batch(server, chain, rows, applications.ID_COLUMN, folder),
    }
    table = Table("mode", _right("rows"), _right("ms"), "same as by hand")
    for mode, answer in scored.items():
        table.add_row(mode, str(len(answer.answers)), f"{answer.seconds * 1000:.1f}",
                      _yes(answer.answers == by_hand))  # fmt: skip
    demo.console.print(table)
    differ = [mode for mode, answer in scored.items() if answer.answers != by_hand]
    _fail_on([f"the pipeline in {mode} answered differently" for mode in differ], "modes")
    return f"the pipeline agrees in {len(scored)} modes"


def digit_files(demo: Demo) -> str:
    """PNG files of handwritten digits through the endpoint ``digits-pipeline``:
    ``digits-png`` (your code, Pillow reads the file) then ``digits`` (scikit-learn), in real
    time, each file as a raw body and all as V1 ``{"b64": ...}`` cells, and each as an
    async job of the chain; every answer must equal the two models applied in process. The
    files are written to ``demo/digits/`` for the README's commands. (Streams do not take
    files yet.)"""
    demo.console.rule("Files: PNG images, your code then scikit-learn")
    server = demo.server()
    reader, classifier = digits.register(demo.registry, alias=ALIAS)
    steps = [f"{digits.READER}@{ALIAS}", f"{digits.NAME}@{ALIAS}"]
    Endpoints(demo.registry.store).apply_one(digits.ENDPOINT, Endpoint(pipeline=steps))
    files, truth = digits.pngs(DIGIT_FILES)
    digits.write_pngs(examples.FOLDER / "digits", DIGIT_FILES)
    pipeline = Pipeline([demo.registry.load(step) for step in steps])
    local = pipeline.predict(pa.table({"image": pa.array(files)})).to_pylist()
    demo.console.print(
        f"{reader.ref} (python) and {classifier.ref} ({classifier.flavor}) registered; endpoint "
        f"{digits.ENDPOINT}: {' → '.join(steps)}; {DIGIT_FILES} held-out scikit-learn digits "
        "as 8x8 PNG files, compared with both models applied in process:"
    )
    b64 = [{"image": {"b64": base64.b64encode(data).decode()}} for data in files]
    scored = {  # the first request waits until the server has read the endpoint
        "V1 b64 cells": _endpoint_answers(server, digits.ENDPOINT, b64),
        "raw PNG bodies": _raw_answers(server, digits.ENDPOINT, files),
        "async file jobs": _file_jobs(server, ",".join(steps), files),
    }
    table = Table("sent as", _right("files"), _right("ms"), _right("right digit"))
    table.add_column("same as in-process")
    for mode, answer in scored.items():
        right = sum(a["label"] == d for a, d in zip(answer.answers, truth, strict=True))
        cells = (mode, str(len(answer.answers)), f"{answer.seconds * 1000:.1f}", str(right))
        table.add_row(*cells, _yes(answer.answers == local))
    demo.console.print(table)
    differ = [mode for mode, answer in scored.items() if answer.answers != local]
    _fail_on([f"the digits sent as {mode} were answered differently" for mode in differ], "ways")
    return f"{DIGIT_FILES} PNG files answered alike raw, in base64 and as jobs"


def images_and_texts(demo: Demo) -> str:
    """An image answered with an image (``upscale``, your code with Pillow: a PNG twice as
    large), in real time and as an async job whose result is served as ``image/png``; and
    support messages routed to a team (``support``, scikit-learn on the text), sent as raw
    ``text/plain`` bodies and as V1 JSON. Every answer must equal the model's in process."""
    demo.console.rule("Images and texts: an upscaler, a text classifier")
    server = demo.server()
    upscaler = demo.registry.register(
        UPSCALE, "upscale", trust_code=True, alias=ALIAS, description="Upscales a PNG twice."
    )
    router = support.register(demo.registry, alias=ALIAS)
    image = digits.pngs(1)[0][0]
    local_image = demo.registry.load(upscaler.ref).predict(pa.table({"image": [image]}))
    raw = server.request("POST", "/invocations", image, _target(upscaler.name, "image/png"))
    job = server.request("POST", f"/v1/models/{upscaler.ref}/async", image, _png())
    if raw.status != 200 or job.status != 202:
        raise DemoError(f"the upscaler answered {_error(raw if raw.status != 200 else job)}")
    server.wait_job(job.json()["job_id"])
    result = server.request("GET", f"/v1/jobs/{job.json()['job_id']}/result")
    texts, teams = support.messages(SUPPORT_MESSAGES, seed=99)  # never trained on
    local = demo.registry.load(router.ref).predict(pa.table({"text": texts})).to_pylist()
    as_json = server.post_json(f"/v1/models/{router.ref}:predict", {"instances": [
        {"text": text} for text in texts]}).json()["predictions"]  # fmt: skip
    as_text = [
        server.request("POST", "/invocations", text.encode(), _target(router.name, "text/plain"))
        .json()["predictions"][0]
        for text in texts
    ]
    table = Table("model", "sent as", "answer", "same as in-process")
    expected = local_image.column("image")[0].as_py()
    kind = raw.headers.get("content-type", "")
    table.add_row(upscaler.ref, "raw PNG body", f"{kind} answer", _yes(raw.body == expected))
    served = f"{result.headers.get('content-type', '')} result"
    table.add_row(upscaler.ref, "async job", served, _yes(result.body == expected))
    right = sum(row["label"] == team for row, team in zip(local, teams, strict=True))
    answer = f"{right} of {len(texts)} teams right"
    table.add_row(router.ref, "raw text/plain bodies", answer, _yes(as_text == local))
    table.add_row(router.ref, "V1 JSON", answer, _yes(as_json == local))
    demo.console.print(table)
    wrong = [
        what
        for what, same in {
            "the upscaled image in real time": raw.body == expected,
            "the upscaled image as a job": result.body == expected,
            "the support messages as text": as_text == local,
            "the support messages as JSON": as_json == local,
        }.items()
        if not same
    ]
    _fail_on([f"{what} differed from in process" for what in wrong], "answers")
    return f"an image and {len(texts)} texts answered alike in every way sent"


def _target(model: str, content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type, "X-Amzn-SageMaker-Target-Model": model}


def _png() -> dict[str, str]:
    return {"Content-Type": "image/png"}


def _raw_answers(server: Server, endpoint: str, files: list[bytes]) -> Scored:
    """Each file as the body of its own request (``content-type: image/png``)."""
    answers, seconds = [], 0.0
    for data in files:
        path = f"/endpoints/{endpoint}/invocations"
        reply = server.request("POST", path, data, {"Content-Type": "image/png"})
        if reply.status != 200:
            raise DemoError(f"the {endpoint} endpoint answered a PNG file {_error(reply)}")
        answers += reply.json()["predictions"]
        seconds += reply.ms / 1000
    return Scored(answers, seconds)


def _file_jobs(server: Server, ref: str, files: list[bytes]) -> Scored:
    """Each file as the upload of its own async job of ``ref`` (a chain), answered in JSON."""
    started = time.perf_counter()
    tokens = []
    for data in files:
        path = f"/v1/models/{ref}/async"
        reply = server.request("POST", path, data, {"Content-Type": "image/png"})
        if reply.status != 202:
            raise DemoError(f"a job of a PNG file for {ref} answered {_error(reply)}")
        tokens.append(reply.json()["job_id"])
    answers = []
    for token in tokens:
        view = server.wait_job(token)
        reply, predictions = server.job_result(token)
        if predictions is None:
            raise DemoError(f"the job of a PNG file for {ref} ended {view['status']}: {view}")
        answers += predictions
    return Scored(answers, time.perf_counter() - started)


def _endpoint_answers(server: Server, name: str, instances: list[dict[str, Any]]) -> Scored:
    """The instances through the endpoint ``name`` (V1), once the server has read it from
    the store (it reads endpoints every second)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    started = time.perf_counter()
    while True:
        reply = server.post_json(f"/v1/endpoints/{name}:predict", {"instances": instances})
        if reply.status == 200:
            return Scored(reply.json()["predictions"], time.perf_counter() - started)
        if reply.status != 404 or time.monotonic() > deadline:
            raise DemoError(f"the {name} endpoint answered {_error(reply)}")
        time.sleep(0.1)
        started = time.perf_counter()


SECTIONS: list[Section] = [
    register_models,
    predict_samples,
    serve_real_time,
    run_jobs,
    transform_datasets,
    stream_events,
    every_mode_agrees,
    pipeline,
    digit_files,
    images_and_texts,
]


def _ref(recipe: Recipe) -> str:
    return f"{recipe.NAME}@{ALIAS}"


def _features(recipe: Recipe) -> pa.Table:
    """The sample rows as a client sends them: the features, without the id column."""
    return recipe.sample(SAMPLE_ROWS, SAMPLE_SEED).select(recipe.FEATURES)


def _each_protocol(
    server: Server, recipe: Recipe, rows: pa.Table, outputs: list[str]
) -> list[tuple[str, int, Reply, Predictions | None]]:
    """Each protocol's exchange: its name, rows sent, the reply and the answer's rows."""
    one = rows.slice(0, 1)
    return [
        ("V1", rows.num_rows, *server.predict_v1(_ref(recipe), rows)),
        ("V2", 1, *server.infer_v2(recipe.NAME, one)),
        ("SageMaker CSV", 1, *server.invoke_sagemaker(recipe.NAME, one, outputs)),
    ]


def _submit(server: Server, recipe: Recipe) -> str:
    reply = server.submit_job(_ref(recipe), _features(recipe))
    if reply.status != 202:
        raise DemoError(f"submitting the {recipe.NAME} job answered {_error(reply)}")
    job_id: str = reply.json()["job_id"]
    return job_id


def _fail_on(problems: list[str], what: str) -> None:
    if problems:
        raise DemoError(f"{len(problems)} {what}:\n" + "\n".join(f"  {p}" for p in problems))


def _right(header: str) -> Column:
    return Column(header, justify="right")


def _status(reply: Reply) -> str:
    return str(reply.status) if reply.status == 200 else f"[red]{reply.status}[/]"


def _latency(reply: Reply) -> str:
    return f"{reply.ms:.1f}" + ("*" if reply.cold else "")


def _duration(job: dict[str, Any]) -> str:
    if job.get("finished_at") is None:
        return "-"
    took = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    return f"{took.total_seconds() * 1000:.1f}"


def _yes(equal: bool) -> str:
    return "[green]yes[/]" if equal else "[red]no[/]"


def _what_differs(reply: Reply) -> str:
    if reply.status != 200:
        return _error(reply)
    return "the answer differs from the in-process one"


def _error(reply: Reply) -> str:
    return f"HTTP {reply.status}: {reply.body.decode('utf-8', 'replace')[:500]}"


def _why(job: dict[str, Any]) -> str:
    if job["status"] in ("queued", "running"):
        return f"still {job['status']} after {JOB_TIMEOUT_S:.0f} s"
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        return f"{job['status']} ({error.get('type')}: {error.get('message')})"
    return "its answer differs from the real-time one"


def _show_predictions(console: Console, registry: Registry, recipe: Recipe) -> None:
    ref = f"{recipe.NAME}@{ALIAS}"
    started = time.perf_counter()
    predictor = registry.load(ref)
    load_ms = (time.perf_counter() - started) * 1000
    rows = recipe.sample(SAMPLE_ROWS, SAMPLE_SEED)
    scored = predictor.predict(rows, passthrough=[recipe.ID_COLUMN])
    console.print(f"\n{ref} -> [bold]{predictor.ref}[/], loaded in {load_ms:.0f} ms")
    table = Table()
    for name in scored.column_names:
        table.add_column(name, justify="left" if name == recipe.ID_COLUMN else "right")
    for row in scored.to_pylist():
        table.add_row(*(_cell(value) for value in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


def main() -> int:
    settings = Settings()
    console = Console()
    console.print(f"mmserve demo, store [bold]{settings.store_url}[/]")
    started = time.perf_counter()
    try:
        with ExitStack() as stack:
            demo = Demo(console, Registry.from_settings(settings), settings, stack)
            done = [section(demo) for section in SECTIONS]
            examples.write(demo.registry)
    except (MMServeError, DemoError) as err:
        Console(stderr=True).print(f"[red]error:[/] {err}", highlight=False)
        return 1
    except KeyboardInterrupt:  # the server, if started, is stopped by now
        return 130
    summary = f"\n[green]done[/]: {', '.join(done)} in {time.perf_counter() - started:.1f} s."
    console.print(summary, soft_wrap=True)
    console.print("\n".join(examples.closing_lines()), highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
