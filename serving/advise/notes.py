"""What comes with a recommendation: how to run it in mmserve, how several models are
hosted (multi-model, pipeline), and the caveats the requirements raise."""

from __future__ import annotations

from serving.advise.costs import HOURS, instances
from serving.advise.model import Mode, Requirements, duration, money
from serving.settings import Settings

HOW: dict[Mode, str] = {
    "realtime": "mmserve serve (V1, V2 and SageMaker routes), behind a load balancer; "
    "scale the servers on CPU",
    "serverless": "mmserve serve --serverless: idle models unload after "
    "MMSERVE_SERVERLESS__IDLE_TTL_S; mark a model provisioned to keep it warm",
    "async": "POST /v1/models/{ref}/async (or mmserve jobs submit) and mmserve worker "
    "processes on MMSERVE_BROKER_URL, scaled on the queue's length",
    "batch": "mmserve batch run --model ... --input ... --output ... (or POST "
    "/v1/batch-jobs; a schedule in MMSERVE_SCHEDULES)",
    "streaming": "mmserve stream --model ... --source ... --sink ... --group ...: more "
    "consumers in the group for more events",
}


def notes(
    req: Requirements, settings: Settings, mode: Mode, costs: dict[Mode, float | None]
) -> list[str]:
    """How to run ``mode``, then the hosting of several models and the caveats."""
    found = [f"run it: {HOW[mode]}"]
    if req.models > 1:
        found.append(_multi_model(req, settings, mode))
    if req.chain > 1:
        found.append(
            f"a chain of {req.chain} models per request (pre-processing -> prediction, "
            "frameworks may differ): serve it as one pipeline endpoint, mmserve's "
            "multi-container endpoint (endpoints file: pipeline: [prep:1, model:1]), each "
            "model's output feeding the next within one request"
        )
    took, target = req.processing_s, req.latency_ms
    if took is not None and target is not None and took * 1000 > target:
        found.append(
            f"processing alone ({duration(took)}) exceeds the latency target "
            f"({duration(target / 1000)}): no mode meets it; a faster model or machine does"
        )
    if mode == "serverless":
        ttl = settings.serverless.idle_ttl_s
        found.append(
            f"the first request after {duration(ttl)} without any is a cold start "
            "(the model loads); set the latency target with that in mind"
        )
    if costs["realtime"] is None:
        found.append("no request rate (--rps): the modes' costs are not compared")
    return found


def _multi_model(req: Requirements, settings: Settings, mode: Mode) -> str:
    """Many small models of one framework share servers (a multi-model endpoint): the
    cost of one endpoint against one per model."""
    text = (
        f"{req.models} models on one endpoint (multi-model): every mmserve server and "
        "worker serves any registered model, loading each on first use into a shared "
        "cache, so the models share instances instead of one endpoint each"
    )
    if mode == "realtime" and req.rps is not None:
        prices = settings.advise
        shared = instances(req, prices, peak=True) * HOURS * prices.instance_hour_usd
        one = req.model_copy(update={"rps": req.rps / req.models})
        separate = req.models * instances(one, prices, peak=True) * HOURS
        text += f": {money(shared)} a month against {money(separate * prices.instance_hour_usd)}"
    cache = settings.cache.max_models
    if req.models > cache:
        text += (
            f"; the cache keeps {cache} loaded (MMSERVE_CACHE__MAX_MODELS): raise it to keep "
            f"all {req.models} warm"
        )
    return text
