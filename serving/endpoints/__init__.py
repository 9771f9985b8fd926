"""Deployment strategies, the core (no FastAPI, no modes): endpoints with weighted
production variants, shadows, data capture, pipelines, and guarded rollouts.

- :mod:`~serving.endpoints.config`: what an endpoint is (pydantic); :mod:`~.files` reads an
  endpoints file, refusals naming the line;
- :mod:`~.catalog`: endpoints in the store (config and live state), the source of truth;
  :mod:`~.state`: the live state (weights, rollout, decisions);
- :mod:`~.split`: which variant (and version) answers a request;
- :mod:`~.pipeline`: models applied in order, with the predictor's interface;
- :mod:`~.capture` and :mod:`~.compare`: captured traffic and the shadow report;
- :mod:`~.strategy`, :mod:`~.guardrails`, :mod:`~.rollout`: shifts and promotions, step by
  step, rolled back on a breach.

The HTTP app composes them (:mod:`serving.http.endpoints`); the CLI runs the rollouts.
"""
