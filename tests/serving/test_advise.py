"""``mmserve advise`` against the deployment documents: their decision table, every worked
example, the checkpoint questions and the muddy points, each pinned to its exact mode and
the fact that decided it; the limits and prices taken from the settings; traffic read from
a real data capture; and the command itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from serving.advise import Advice, NoCapture, Requirements, advise, read_traffic
from serving.advise.model import MB
from serving.cli import app
from serving.endpoints import capture
from serving.endpoints.catalog import Endpoints
from serving.endpoints.config import Capture, Endpoint, Shadow, Variant
from serving.registry import Registry
from serving.settings import AdviseSettings, JobSettings, Settings
from serving.store import Store
from tests import fixtures
from tests.services import mmserve_server

SETTINGS = Settings(_env_file=None)  # the defaults: 6 MB / 60 s, 1 GB / 1 hour
DAY = 86400


def advice(settings: Settings = SETTINGS, **requirements: Any) -> Advice:
    return advise(Requirements(**requirements), settings)


def decided(settings: Settings = SETTINGS, **requirements: Any) -> tuple[str, list[str]]:
    answer = advice(settings, **requirements)
    return answer.mode, answer.decided_by


def said(answer: Advice, text: str) -> bool:
    return any(text in reason for reason in answer.reasons)


# -- the decision table ("Formula / Concept Box") ----------------------------------------


def test_low_latency_is_real_time() -> None:
    answer = advice(latency_ms=50, pattern="steady")
    assert (answer.mode, answer.decided_by) == ("realtime", ["latency_ms<advise.cold_start_ms"])
    assert said(answer, "a 50 ms latency target is below a serverless cold start (~1 s")


def test_spiky_traffic_is_serverless() -> None:
    answer = advice(pattern="spiky")
    assert (answer.mode, answer.decided_by) == ("serverless", ["pattern=spiky"])
    assert said(answer, "traffic is spiky (pattern=spiky): serverless follows the bursts")


def test_a_payload_past_100_mb_is_async() -> None:
    answer = advice(payload_mb=200)
    assert (answer.mode, answer.decided_by) == ("async", ["payload_mb>realtime.max_payload_mb"])
    assert said(answer, "a 200 MB payload exceeds the 6 MB limit of real time and serverless")


def test_offline_data_is_batch() -> None:
    answer = advice(input="dataset")
    assert (answer.mode, answer.decided_by) == ("batch", ["input=dataset"])
    assert said(answer, "the data is a dataset to score whole (input=dataset)")


def test_the_comparison_table_limits_and_scale_to_zero() -> None:
    answer = advice(payload_mb=1)
    limits = {m: (lim.max_payload_mb, lim.timeout_s) for m, lim in answer.limits.items()}
    assert limits == {
        "realtime": (6, 60),
        "serverless": (6, 60),
        "async": (1024, 3600),
        "batch": (None, None),
        "streaming": (None, None),
    }
    to_zero = {view.mode: view.scales_to_zero for view in answer.modes}
    assert to_zero == {
        "realtime": False,
        "serverless": True,
        "async": True,
        "batch": True,
        "streaming": False,
    }


# -- the second document's summary ------------------------------------------------------


@pytest.mark.parametrize(
    ("requirements", "mode", "fact"),
    [
        ({"waiting": True}, "realtime", "waiting=true"),  # user is waiting: online
        ({"input": "dataset"}, "batch", "input=dataset"),  # process this dataset
        ({"waiting": False}, "async", "waiting=false"),  # process these requests later
        ({"input": "events"}, "streaming", "input=events"),  # events never stop
    ],
)
def test_the_summary_of_the_modes(requirements: dict[str, Any], mode: str, fact: str) -> None:
    assert decided(**requirements) == (mode, [fact])


# -- worked examples and definition-example pairs ---------------------------------------


def test_the_global_news_recommender_is_real_time() -> None:
    answer = advice(rps=10_000, pattern="steady", latency_ms=200, waiting=True)
    assert (answer.mode, answer.decided_by) == ("realtime", ["latency_ms<advise.cold_start_ms"])
    assert said(answer, "a 200 ms latency target is below a serverless cold start")
    # ...and the volume justifies persistent instances, by the cost comparison:
    assert said(
        answer,
        "steady traffic of 10,000 req/s justifies persistent instances: $8,395.00 a month "
        "for real time against $15,768.00 serverless",
    )
    assert decided(rps=10_000, pattern="steady") == (
        "realtime",
        ["pattern=steady", "cost:realtime<serverless"],
    )


def test_the_500_mb_mri_scan_taking_2_minutes_is_async() -> None:
    answer = advice(payload_mb=500, processing_s=120, waiting=False)
    assert answer.mode == "async"
    assert answer.decided_by == [
        "payload_mb>realtime.max_payload_mb",
        "processing_s>realtime.timeout_s",
    ]
    assert answer.reasons[:2] == [
        "a 500 MB payload exceeds the 6 MB limit of real time and serverless "
        "(MMSERVE_MAX_PAYLOAD_BYTES)",
        "2 min of processing exceeds the 60 s timeout of real time and serverless "
        "(MMSERVE_REQUEST_TIMEOUT_S)",
    ]
    assert said(answer, "async takes it: up to 1 GB and 1 hour per job")
    assert said(answer, "no one waits for the answer (waiting=false)")  # an agreeing reason
    # "The doctor does not need the result for several minutes", said as a latency target:
    assert decided(latency_ms=5 * 60_000, processing_s=30) == (
        "async",
        ["processing_s>advise.slow_request_s"],
    )


def test_image_upscaling_at_30_seconds_an_image_is_async() -> None:
    answer = advice(processing_s=30, payload_mb=4)
    assert (answer.mode, answer.decided_by) == ("async", ["processing_s>advise.slow_request_s"])
    assert said(answer, "30 s of processing per request is too slow for a synchronous request")


def test_a_chatbot_with_10_to_20_questions_a_day_is_serverless() -> None:
    answer = advice(rps=15 / DAY, pattern="rare", waiting=True)
    assert (answer.mode, answer.decided_by) == ("serverless", ["pattern=rare"])
    assert said(answer, "serverless scales to zero and costs nothing while idle")
    # Given only its rate, the cost comparison says the same:
    answer = advice(rps=15 / DAY, waiting=True)
    assert (answer.mode, answer.decided_by) == ("serverless", ["cost:serverless<=realtime"])
    assert said(answer, "at 15 req/day the volume does not justify persistent instances")


def test_a_weekly_churn_scoring_of_a_million_profiles_is_batch() -> None:
    answer = advice(input="dataset", rps=1_000_000 / (7 * DAY), latency_ms=DAY * 1000)
    assert (answer.mode, answer.decided_by) == ("batch", ["input=dataset"])
    costs = {view.mode: view.monthly_usd for view in answer.modes}
    # 1M rows of 10 ms on 2-row-at-a-time instances, at $0.23 an hour:
    assert costs["batch"] == 1.388062
    assert costs["batch"] < costs["realtime"]  # type: ignore[operator]


def test_a_card_transaction_stream_is_streaming() -> None:
    answer = advice(input="events", rps=2000, latency_ms=1000, waiting=False)
    assert (answer.mode, answer.decided_by) == ("streaming", ["input=events"])
    assert said(answer, "a continuous stream of events (input=events)")


def test_events_too_heavy_for_a_stream_are_async_jobs() -> None:  # a video after its upload
    assert decided(input="events", payload_mb=300, processing_s=90) == (
        "async",
        ["payload_mb>realtime.max_payload_mb", "processing_s>realtime.timeout_s"],
    )


SECOND_DOCUMENT = [
    # Online: the user waits, the decision is synchronous.
    ("card payment approved or denied", {"waiting": True, "latency_ms": 150, "rps": 800,
                                          "pattern": "steady"}, "realtime"),
    ("login attempt, MFA on a new device", {"waiting": True, "latency_ms": 300}, "realtime"),
    ("checkout risk score", {"waiting": True, "latency_ms": 200, "pattern": "spiky"}, "realtime"),
    # Batch: a dataset, latency minutes to hours.
    ("overnight credit score of every customer", {"input": "dataset"}, "batch"),
    ("monthly default risk of the portfolio", {"input": "dataset", "latency_ms": 3.6e6}, "batch"),
    # Streaming: events never stop.
    ("many Pix transfers in a short time", {"input": "events", "latency_ms": 2000}, "streaming"),
    ("abnormal trading activity", {"input": "events", "rps": 5000}, "streaming"),
    # Async: too slow for real time, or no one waits.
    ("KYC documents: OCR and fraud checks", {"payload_mb": 20, "processing_s": 45}, "async"),
    ("explanations after the prediction", {"waiting": False}, "async"),
    ("a video processed after its upload", {"input": "events", "payload_mb": 800,
                                            "processing_s": 600}, "async"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("requirements", "mode"), [e[1:] for e in SECOND_DOCUMENT], ids=[e[0] for e in SECOND_DOCUMENT]
)
def test_the_second_documents_examples(requirements: dict[str, Any], mode: str) -> None:
    assert advice(**requirements).mode == mode


# -- checkpoint questions ----------------------------------------------------------------


def test_scale_to_zero_in_periods_of_no_traffic_is_serverless() -> None:
    answer = advice(pattern="rare")
    assert (answer.mode, answer.decided_by) == ("serverless", ["pattern=rare"])
    assert said(answer, "scales to zero")


def test_async_is_for_incoming_requests_and_batch_for_existing_datasets() -> None:
    heavy = {"payload_mb": 500, "processing_s": 120}
    requests = advice(input="requests", **heavy)
    dataset = advice(input="dataset", **heavy)
    assert (requests.mode, dataset.mode) == ("async", "batch")
    assert said(dataset, "not requests arriving")


def test_fifty_small_models_share_one_multi_model_endpoint() -> None:
    answer = advice(models=50, rps=50, pattern="steady", latency_ms=100)
    assert (answer.mode, answer.hosting) == ("realtime", "multi-model")
    note = next(n for n in answer.notes if n.startswith("50 models on one endpoint"))
    # Cost efficiency: one shared instance against one endpoint (one instance) per model.
    assert ": $167.90 a month against $8,395.00;" in note
    assert note.endswith(
        "the cache keeps 32 loaded (MMSERVE_CACHE__MAX_MODELS): raise it to keep all 50 warm"
    )


# -- muddy points ------------------------------------------------------------------------


def test_intermittent_traffic_small_and_fast_is_serverless_large_and_long_is_async() -> None:
    assert decided(pattern="rare", payload_mb=0.01, processing_s=0.05) == (
        "serverless",
        ["pattern=rare"],
    )
    assert decided(pattern="rare", payload_mb=200, processing_s=300) == (
        "async",
        ["payload_mb>realtime.max_payload_mb", "processing_s>realtime.timeout_s"],
    )


def test_same_framework_models_are_multi_model_a_chain_is_a_pipeline() -> None:
    assert advice(models=5).hosting == "multi-model"
    chained = advice(chain=2, models=2)
    assert chained.hosting == "pipeline"
    assert any("serve it as one pipeline endpoint" in n for n in chained.notes)


# -- limits and prices come from the settings --------------------------------------------


def test_the_limits_are_mmserves_own_settings() -> None:
    roomy = Settings(_env_file=None, max_payload_bytes=20 * MB, request_timeout_s=300)
    assert decided(roomy, payload_mb=10, processing_s=30, pattern="steady") == (
        "async",  # still past the 10 s of a synchronous request
        ["processing_s>advise.slow_request_s"],
    )
    assert decided(roomy, payload_mb=10, pattern="steady")[0] == "realtime"
    short = Settings(_env_file=None, jobs=JobSettings(time_limit_s=600))
    answer = advice(short, processing_s=1200)
    assert (answer.mode, answer.decided_by) == ("batch", ["processing_s>async.timeout_s"])
    assert said(answer, "20 min of processing exceeds the 10 min timeout of async jobs")


def test_costs_follow_the_unit_prices_exactly() -> None:
    prices = AdviseSettings(
        instance_hour_usd=1,
        instance_concurrency=1,
        processing_s=1,
        serverless_gb_second_usd=0.5,
        serverless_memory_gb=1,
        serverless_request_usd=0,
    )
    settings = Settings(_env_file=None, advise=prices)
    costs = {v.mode: v.monthly_usd for v in advice(settings, rps=1, pattern="steady").modes}
    assert costs == {
        "realtime": 730.0,  # one instance, always on
        "serverless": 1_314_000.0,  # 2,628,000 requests of 1 s x 1 GB at $0.5
        "async": 730.0,  # busy the whole month
        "batch": 730.0,
        "streaming": 730.0,
    }
    spiky = {v.mode: v.monthly_usd for v in advice(settings, rps=1, pattern="spiky").modes}
    assert spiky["realtime"] == 3 * 730.0  # sized for peaks 3x the average
    assert all(v.monthly_usd is None for v in advice(settings, pattern="steady").modes)


# -- traffic read from a data capture ----------------------------------------------------

START = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)


def record(at: datetime, i: int, role: str = "primary", rows: int = 1) -> capture.Record:
    variant = "main" if role == "primary" else "shadow"
    inputs = pa.table({"f0": [0.5] * rows})  # {"f0":0.5}: 10 bytes a row
    return capture.Record("ep", variant, role, "lr:1", f"r{i}", at, 5.0, inputs, None)


def captured(store: Store, seconds: list[float], **kwargs: Any) -> None:
    capture.write(
        store, [record(START + timedelta(seconds=s), i, **kwargs) for i, s in enumerate(seconds)]
    )


STEADY = [m * 60 + k * 6 for m in range(30) for k in range(10)]  # 10 a minute, 30 minutes
SPIKY = [m * 60 + k * 30 for m in range(28) for k in range(2)] + [
    m * 60 + k for m in (28, 29) for k in range(60)
]  # 2 a minute, then two minutes of 60
RARE = [i * 72 * 60 for i in range(20)]  # 20 a day, one every 72 minutes


@pytest.mark.parametrize(
    ("seconds", "pattern", "why", "rps"),
    [
        (STEADY, "steady", "the busiest minute held 10 requests, 1.0x the average 10", 300 / 1800),
        (SPIKY, "spiky", "the busiest minute held 60 requests, 10.2x the average 5.87", 176 / 1800),
        (RARE, "rare", "no request for longer than 5 min 93% of the time", 20 / (1369 * 60)),
    ],
    ids=["steady", "spiky", "rare"],
)
def test_the_pattern_rate_payload_and_latency_of_a_capture(
    store: Store, seconds: list[float], pattern: str, why: str, rps: float
) -> None:
    captured(store, seconds)
    captured(store, seconds[:5], role="shadow")  # the same requests again: not counted
    traffic = read_traffic(store, "ep", SETTINGS)
    assert (traffic.requests, traffic.sample, traffic.pattern, traffic.why) == (
        len(seconds),
        1.0,
        pattern,
        why,
    )
    assert traffic.rps == pytest.approx(rps, rel=1e-12)
    assert (traffic.payload_mb, traffic.latency_p50_ms, traffic.latency_p99_ms) == (10 / MB, 5, 5)
    assert traffic.requirements() == {
        "rps": traffic.rps,
        "pattern": pattern,
        "payload_mb": 10 / MB,
        "processing_s": 0.005,
        "input": "requests",
    }


def test_a_request_of_many_rows_counts_once_with_all_its_bytes(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    capture.write(store, [record(START, 0, rows=3), record(START, 1)])
    traffic = read_traffic(store, "ep", SETTINGS)
    assert (traffic.requests, traffic.payload_mb) == (2, 30 / MB)


def test_the_rate_accounts_for_the_capture_and_shadow_samples(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    captured(store, STEADY)
    main = [Variant(name="main", model="lr:1")]
    Endpoints(store).apply_one("ep", Endpoint(variants=main, capture=Capture(sample=0.5)))
    assert read_traffic(store, "ep", SETTINGS).rps == pytest.approx(2 * 300 / 1800, rel=1e-12)
    shadowed = Endpoint(
        variants=main, capture=Capture(sample=0.5), shadow=Shadow(model="lr:2", sample=0.5)
    )
    Endpoints(store).apply_one("ep", shadowed)  # captured when sampled by either: 75%
    assert read_traffic(store, "ep", SETTINGS).sample == 0.75


def test_captured_traffic_is_advised_on_like_the_requirements_it_shows(tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    captured(store, STEADY)
    cheap = Settings(_env_file=None, advise=AdviseSettings(instance_hour_usd=0.0001))
    traffic = read_traffic(store, "ep", cheap)
    assert decided(cheap, **traffic.requirements()) == (
        "realtime",
        ["pattern=steady", "cost:realtime<serverless"],
    )
    assert decided(**traffic.requirements()) == (
        "serverless",
        ["pattern=steady", "cost:serverless<=realtime"],
    )


def test_an_endpoint_without_capture_is_reported(tmp_path: Path) -> None:
    with pytest.raises(NoCapture) as raised:
        read_traffic(Store.from_url(str(tmp_path / "store")), "ep", SETTINGS)
    assert raised.value.message == (
        "no captured traffic for endpoint 'ep' (nothing under capture/ep/): "
        "give it a capture: {sample: ...} and some traffic"
    )


# -- the command -------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("MMSERVE_ADVISE__INSTANCE_HOUR_USD", "MMSERVE_MAX_PAYLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MMSERVE_STORE_URL", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_advise_json_is_machine_readable(cli: CliRunner) -> None:
    args = ["advise", "--payload-mb", "500", "--processing-s", "120", "--no-waiting", "--json"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["mode"] == "async"
    assert answer["decided_by"] == [
        "payload_mb>realtime.max_payload_mb",
        "processing_s>realtime.timeout_s",
    ]
    assert answer["limits"]["async"]["max_payload_mb"] == 1024
    assert [m["mode"] for m in answer["modes"]] == [
        "realtime",
        "serverless",
        "async",
        "batch",
        "streaming",
    ]
    assert answer["requirements"]["waiting"] is False
    assert answer["traffic"] is None


def test_advise_for_a_person_prints_the_mode_the_reasons_and_the_table(cli: CliRunner) -> None:
    result = cli.invoke(app, ["advise", "--rps", "10000", "--pattern", "steady"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "mode: realtime (pattern=steady, cost:realtime<serverless)"
    assert lines[1].startswith("  - steady traffic of 10,000 req/s justifies persistent instances")
    assert any(line.startswith("│ serverless │ yes  │ 6 MB    │ 60 s    │ yes") for line in lines)


def test_advise_prices_come_from_the_environment(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMSERVE_ADVISE__INSTANCE_HOUR_USD", "1")
    result = cli.invoke(app, ["advise", "--rps", "1", "--json"])
    assert json.loads(result.stdout)["modes"][0]["monthly_usd"] == 730.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "bursty"], "Invalid value for '--pattern'"),
        (["--input", "files"], "Invalid value for '--input'"),
        (["--rps", "many"], "Invalid value for '--rps'"),
        (["--models", "0"], "Invalid value for '--models'"),
        (["--rps", "-1"], "error: --rps: Input should be greater than or equal to 0"),
        (["--latency-ms", "0"], "error: --latency-ms: Input should be greater than 0"),
        (
            [],
            "error: give a requirement (--latency-ms, --payload-mb, --rps, --pattern, ...) "
            "or --from-capture ENDPOINT",
        ),
    ],
)
def test_bad_flags_exit_2_with_a_message(cli: CliRunner, args: list[str], message: str) -> None:
    result = cli.invoke(app, ["advise", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_advise_from_capture_reads_the_store(cli: CliRunner, tmp_path: Path) -> None:
    store = Store.from_url(str(tmp_path / "store"))
    captured(store, RARE)
    result = cli.invoke(app, ["advise", "--from-capture", "ep", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["mode"], answer["decided_by"]) == ("serverless", ["pattern=rare"])
    assert answer["traffic"]["requests"] == 20
    assert answer["traffic"]["start"] == "2024-05-06T09:00:00+00:00"
    # A flag overrides what the capture shows:
    result = cli.invoke(app, ["advise", "--from-capture", "ep", "--input", "dataset", "--json"])
    assert json.loads(result.stdout)["mode"] == "batch"
    human = cli.invoke(app, ["advise", "--from-capture", "ep"])
    assert human.stdout.startswith(
        "endpoint ep: 20 requests captured (sample 100%), rare: no request for longer than "
        "5 min 93% of the time; latency p50 5.0 ms, p99 5.0 ms\nmode: serverless (pattern=rare)"
    )


def test_advise_from_a_capture_that_is_not_there_exits_1(cli: CliRunner) -> None:
    result = cli.invoke(app, ["advise", "--from-capture", "nope"])
    assert result.exit_code == 1
    assert "error: no captured traffic for endpoint 'nope'" in result.stderr


@pytest.mark.slow
def test_advise_reads_the_capture_a_real_server_wrote(tmp_path: Path) -> None:
    store_dir, file = tmp_path / "store", tmp_path / "endpoints.yaml"
    Registry(Store.from_url(str(store_dir))).register(fixtures.logistic(), "lr")
    file.write_text(
        "endpoints:\n  captured:\n    variants: [{name: main, model: lr:1}]\n"
        "    capture: {sample: 1.0}\n"
    )
    env = {
        "MMSERVE_STORE_URL": str(store_dir),
        "MMSERVE_ENDPOINTS": str(file),
        "MMSERVE_DEPLOYMENT__CAPTURE_FLUSH_S": "0.1",
    }
    x, _ = fixtures.numeric_data(2 * 30, seed=4)
    requests = [x[i : i + 2].tolist() for i in range(0, len(x), 2)]
    with mmserve_server(env) as url:
        for instances in requests:
            body = json.dumps({"instances": instances}).encode()
            post = Request(f"{url}/v1/endpoints/captured:predict", body, JSON_HEADERS)
            with urlopen(post, timeout=30) as answer:
                assert answer.status == 200
    # Stopping the server wrote what it still held. The processing time is given: the
    # capture's own (its p99 latency, as measured on this machine) decides the costs.
    result = subprocess.run(
        [MMSERVE, "advise", "--from-capture", "captured", "--processing-s", "0.005", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    traffic = answer["traffic"]
    assert (traffic["requests"], traffic["sample"], traffic["pattern"]) == (30, 1.0, "steady")
    assert traffic["rps"] in (30 / 60, 30 / 120)  # within one minute, or across two
    largest = max(sum(len(compact(row)) for row in instances) for instances in requests)
    assert traffic["payload_mb"] == largest / MB
    assert (answer["mode"], answer["decided_by"]) == (
        "serverless",
        ["pattern=steady", "cost:serverless<=realtime"],
    )


JSON_HEADERS = {"Content-Type": "application/json"}
MMSERVE = str(Path(sys.executable).with_name("mmserve"))


def compact(row: list[float]) -> str:
    """A row as the capture keeps it: a JSON object by feature name, no spaces."""
    return json.dumps(dict(zip(fixtures.FEATURES, row, strict=True)), separators=(",", ":"))
