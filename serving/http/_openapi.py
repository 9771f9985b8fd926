"""What the predict routes take and give, for the OpenAPI spec (``/openapi.json``, ``/docs``).

The predict routes read their raw body, because each takes several media types (JSON, Arrow
IPC, CSV, parquet, the V2 binary extension): FastAPI then infers no request body from their
signatures, so these ``openapi_extra`` and ``responses`` dicts describe it. The examples fit
the demo models (``make demo``): ``house_prices`` (five numeric features) and ``churn``
(numbers and categories).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import deepcopy
from typing import Any

from serving import codecs
from serving.codecs import sagemaker, v2

Schema = dict[str, Any]

_SCALAR: Schema = {"type": ["number", "string", "boolean", "null"]}
_OUTPUT: Schema = {"type": ["number", "string", "boolean", "null", "array"], "items": _SCALAR}
"""An output's value: a list output (an embedding) is an array."""
_BINARY: Schema = {"type": "string", "format": "binary"}
_TEXT: Schema = {"type": "string"}

# -- request bodies: rows of the demo models -----------------------------------------------

_HOUSES = [[1450, 3, 2.0, 12, 8.5], [2380, 4, 2.5, 40, 3.2]]
_HOUSE_FEATURES = ["sqft", "bedrooms", "bathrooms", "age_years", "distance_km"]
_CUSTOMERS: list[dict[str, Any]] = [
    {
        "tenure_months": 3,
        "monthly_charges": 99.5,
        "support_calls": 4,
        "contract": "month-to-month",
        "payment_method": "electronic-check",
    },
    {
        "tenure_months": 48,
        "monthly_charges": 45.2,
        "support_calls": 0,
        "contract": "two-year",
        "payment_method": "credit-card",
    },
]
_CUSTOMER_COLUMNS = {name: [row[name] for row in _CUSTOMERS] for name in _CUSTOMERS[0]}
_HOUSE_CSV = "\n".join(",".join(map(str, row)) for row in _HOUSES) + "\n"

# -- answers of the demo models to those rows ----------------------------------------------

_HOUSE_PREDICTIONS = [{"prediction": 258260.4892700942}, {"prediction": 464878.8170576878}]
_CHURN_PREDICTIONS = [
    {"label": 1, "proba_0": 0.020615303466031243, "proba_1": 0.9793846965339688},
    {"label": 0, "proba_0": 0.9871625501150244, "proba_1": 0.012837449884975616},
]


def _example(summary: str, value: Any, description: str | None = None) -> Schema:
    example: Schema = {"summary": summary, "value": value}
    if description:
        example["description"] = description
    return example


def error(description: str, message: str) -> Schema:
    schema: Schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what went wrong, naming the field"},
            "error_id": {
                "type": "string",
                "description": "on 5xx only: the id of the failure in the server log",
            },
        },
    }
    return {
        "description": description,
        "content": {codecs.JSON: {"schema": schema, "example": {"error": message}}},
    }


_ERRORS: dict[int | str, Schema] = {
    400: error(
        "The model reference is malformed.",
        "invalid model reference 'churn:0': expected 'name', 'name:<version>' or 'name@<alias>'",
    ),
    404: error("The model, version or alias does not exist.", "model 'ghost' is not registered"),
    413: error(
        "The body exceeds MMSERVE_MAX_PAYLOAD_BYTES.",
        "the request body exceeds the limit of 6291456 bytes",
    ),
    415: error(
        "The Content-Type is not one the route takes.",
        "unsupported format 'text/plain'; use one of application/json, "
        "application/vnd.apache.arrow.stream",
    ),
    422: error("The rows do not fit the model.", "missing column 'contract'"),
    500: error(
        "The model raised (the error_id is in the server log; never a stack trace).",
        "model churn:1 failed: ValueError: ...",
    ),
}

# -- native / KServe V1 ----------------------------------------------------------------------

_ROW_BY_NAME: Schema = {
    "type": "object",
    "additionalProperties": _SCALAR,
    "description": "one row: {feature: value}; other keys are ignored unless the model "
    "refuses extra columns",
}
_ROW_BY_POSITION: Schema = {
    "type": "array",
    "items": _SCALAR,
    "description": "one row: values in the model's registered feature order",
}
_INSTANCES: Schema = {
    "type": "array",
    "minItems": 1,
    "items": {"anyOf": [_ROW_BY_NAME, _ROW_BY_POSITION]},
    "description": "rows, all by name or all by position",
}
_COLUMNS: Schema = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": _SCALAR},
    "description": "columnar: {feature: [values, one per row]}",
}
V1_REQUEST: Schema = {
    "title": "V1PredictRequest",
    "anyOf": [
        {"type": "object", "required": ["instances"], "properties": {"instances": _INSTANCES}},
        {
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": {"anyOf": [_COLUMNS, _INSTANCES]}},
        },
    ],
}
V1_RESPONSE: Schema = {
    "title": "V1PredictResponse",
    "type": "object",
    "required": ["predictions", "model", "version"],
    "properties": {
        "predictions": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": _OUTPUT},
            "description": "one object per row: label and proba_<class>, or prediction, or "
            "the model's named outputs, each in its type (an embedding as an array)",
        },
        "model": {"type": "string"},
        "version": {"type": "integer"},
    },
}

V1_PREDICT: Schema = {
    "requestBody": {
        "required": True,
        "description": "Rows as JSON (also when labelled a form, "
        "`application/x-www-form-urlencoded`, as `curl -d` sends it, or not labelled), or an "
        "Arrow IPC stream whose columns are the features.",
        "content": {
            codecs.JSON: {
                "schema": V1_REQUEST,
                "examples": {
                    "by_position": _example(
                        "instances by position (house_prices)",
                        {"instances": _HOUSES},
                        f"Values in the registered feature order: {', '.join(_HOUSE_FEATURES)}.",
                    ),
                    "by_name": _example("instances by name (churn)", {"instances": _CUSTOMERS}),
                    "columnar": _example("columnar inputs (churn)", {"inputs": _CUSTOMER_COLUMNS}),
                },
            },
            codecs.ARROW: {"schema": _BINARY},
        },
    },
}
V1_RESPONSES: dict[int | str, Schema] = {
    200: {
        "description": "One prediction per row; Arrow IPC when `Accept` asks for it.",
        "content": {
            codecs.JSON: {
                "schema": V1_RESPONSE,
                "examples": {
                    "house_prices": _example(
                        "house_prices",
                        {"predictions": _HOUSE_PREDICTIONS, "model": "house_prices", "version": 1},
                    ),
                    "churn": _example(
                        "churn", {"predictions": _CHURN_PREDICTIONS, "model": "churn", "version": 1}
                    ),
                },
            },
            codecs.ARROW: {"schema": _BINARY},
        },
    },
    **_ERRORS,
}

# -- Open Inference Protocol (V2) ------------------------------------------------------------

_TENSOR_DATA: Schema = {
    "type": "array",
    "items": {"type": ["number", "string", "boolean", "array"]},
    "description": "the values in row-major order, flat or nested as the shape",
}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its ``#/$defs/...`` references replaced by their definitions: inside
    an OpenAPI document, ``#`` is the document, not the schema."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return _inline(defs[ref.removeprefix("#/$defs/")], defs)
    return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}


def _inference_request() -> Schema:
    """The JSON schema of :class:`serving.codecs.v2.InferenceRequest`, with what the codec
    checks beyond the model (datatypes, shapes) stated."""
    raw = v2.InferenceRequest.model_json_schema()
    schema: Schema = _inline(raw, deepcopy(raw.get("$defs", {})))
    schema["properties"]["inputs"]["minItems"] = 1
    tensor = schema["properties"]["inputs"]["items"]
    tensor["properties"]["datatype"]["enum"] = v2.DATATYPES
    tensor["properties"]["shape"].update(minItems=1, items={"type": "integer", "minimum": 0})
    tensor["properties"]["data"] = _TENSOR_DATA
    tensor["properties"]["parameters"]["properties"] = {
        "binary_data_size": {
            "type": "integer",
            "minimum": 0,
            "description": "binary extension: the tensor's bytes follow the JSON header",
        }
    }
    return schema


V2_REQUEST = _inference_request()
_V2_OUTPUT: Schema = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "data": {"type": "array", "items": _SCALAR},
        "parameters": {"type": "object"},
    },
}
V2_RESPONSE: Schema = {
    "title": "InferenceResponse",
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _V2_OUTPUT},
    },
}
# The request exactly as the Open Inference Protocol spec shows it (for a model named
# "mymodel" with those two inputs; mmserve's models answer it with a 422 naming the problem).
_OIP_SPEC_REQUEST = {
    "id": "42",
    "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
    ],
    "outputs": [{"name": "output0"}],
}
_V2_MATRIX = {
    "id": "42",
    "inputs": [{"name": "input0", "shape": [2, 5], "datatype": "FP64", "data": _HOUSES}],
}
_V2_NAMED = {
    "inputs": [
        {"name": "tenure_months", "shape": [2], "datatype": "INT64", "data": [3, 48]},
        {"name": "monthly_charges", "shape": [2], "datatype": "FP64", "data": [99.5, 45.2]},
        {"name": "support_calls", "shape": [2], "datatype": "INT64", "data": [4, 0]},
        {
            "name": "contract",
            "shape": [2],
            "datatype": "BYTES",
            "data": ["month-to-month", "two-year"],
        },
        {
            "name": "payment_method",
            "shape": [2],
            "datatype": "BYTES",
            "data": ["electronic-check", "credit-card"],
        },
    ],
    "outputs": [{"name": "label"}, {"name": "proba_1"}],
}

V2_INFER: Schema = {
    "parameters": [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
            "description": "Binary tensor extension: the length of the JSON header; the "
            "tensors' bytes follow it (`binary_data_size` in each tensor's parameters).",
        }
    ],
    "requestBody": {
        "required": True,
        "description": "An InferenceRequest: one [N, K] tensor holding the K features in "
        "registered order, or one [N] tensor per feature, named after it.",
        "content": {
            v2.MEDIA_TYPE: {
                "schema": V2_REQUEST,
                "examples": {
                    "matrix": _example("one [N, K] tensor (house_prices)", _V2_MATRIX),
                    "named_tensors": _example("one tensor per feature (churn)", _V2_NAMED),
                    "oip_spec": _example(
                        "the Open Inference Protocol spec's example",
                        _OIP_SPEC_REQUEST,
                        "Exactly as the spec shows it, for its model 'mymodel'.",
                    ),
                },
            },
            v2.BINARY_MEDIA_TYPE: {
                "schema": _BINARY,
                "description": "binary extension: the JSON header, then the tensors' bytes",
            },
        },
    },
}
V2_RESPONSES: dict[int | str, Schema] = {
    200: {
        "description": "One [N] tensor per output ([N, K] for an output of K values, such "
        "as an embedding); binary outputs (application/octet-stream, "
        "with Inference-Header-Content-Length) when the request asks for them.",
        "content": {
            v2.MEDIA_TYPE: {
                "schema": V2_RESPONSE,
                "example": {
                    "model_name": "house_prices",
                    "model_version": "1",
                    "id": "42",
                    "outputs": [
                        {
                            "name": "prediction",
                            "shape": [2],
                            "datatype": "FP64",
                            "data": [p["prediction"] for p in _HOUSE_PREDICTIONS],
                        }
                    ],
                },
            },
            v2.BINARY_MEDIA_TYPE: {"schema": _BINARY},
        },
    },
    **{status: _ERRORS[status] for status in (400, 404, 413, 422, 500)},
}

# -- SageMaker -------------------------------------------------------------------------------


def _sagemaker_error(description: str, kind: str, message: str) -> Schema:
    """An error answer of SageMaker's routes: mmserve's ``error``, and what SageMaker's SDKs
    read (``X-Amzn-ErrorType``, ``__type``, ``message``; a ModelError's original status)."""
    answer = error(description, message)
    content = answer["content"][codecs.JSON]
    schema = content["schema"]
    schema["required"] = ["error", "message", "__type"]
    schema["properties"] |= {
        "message": {"type": "string", "description": "the error, as SageMaker's SDKs read it"},
        "__type": {"type": "string", "description": "SageMaker's error type", "example": kind},
    }
    example: Schema = {"error": message, "message": message, "__type": kind}
    if kind == "ModelError":
        schema["properties"] |= {
            "OriginalStatusCode": {"type": "integer"},
            "OriginalMessage": {"type": "string"},
        }
        example |= {"OriginalStatusCode": 500, "OriginalMessage": message}
    content["example"] = example
    answer["headers"] = {
        "X-Amzn-ErrorType": {
            "description": "SageMaker's error type: what boto3 raises "
            "(ValidationError, ModelError, ModelNotReadyException, ...)",
            "schema": {"type": "string", "example": kind},
        }
    }
    return answer


_SAGEMAKER_JSON: Schema = {
    "anyOf": [
        V1_REQUEST,
        {"type": "array", "minItems": 1, "items": {"anyOf": [_ROW_BY_NAME, _ROW_BY_POSITION]}},
    ],
}
_JSON_LINES = "".join(json.dumps(row) + "\n" for row in _CUSTOMERS)


def _target_model(description: str) -> Schema:
    return {
        "name": "X-Amzn-SageMaker-Target-Model",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


SAGEMAKER_INVOCATIONS: Schema = {
    "parameters": [
        _target_model(
            "The model to invoke (a reference; a '.tar.gz' suffix is dropped). "
            "Needed unless exactly one model is registered."
        )
    ],
    "requestBody": {
        "required": True,
        "description": "Rows in any of these formats; `Accept` picks the answer's format "
        "(default: the request's).",
        "content": {
            codecs.CSV: {
                "schema": _TEXT,
                "examples": {
                    "headerless": _example(
                        "headerless rows, in feature order (house_prices)", _HOUSE_CSV
                    ),
                    "header_row": _example(
                        "a header row naming the features (house_prices)",
                        ",".join(_HOUSE_FEATURES) + "\n" + _HOUSE_CSV,
                    ),
                },
            },
            codecs.JSON: {
                "schema": _SAGEMAKER_JSON,
                "examples": {
                    "rows": _example("a list of rows (house_prices)", _HOUSES),
                    "records": _example("a list of objects (churn)", _CUSTOMERS),
                    "instances": _example("a V1 body (churn)", {"instances": _CUSTOMERS}),
                },
            },
            codecs.JSONL: {
                "schema": _TEXT,
                "examples": {"records": _example("one object per line (churn)", _JSON_LINES)},
                "description": "one JSON object (by name) or array (by position) per line",
            },
            codecs.PARQUET: {"schema": _BINARY},
            codecs.ARROW: {"schema": _BINARY},
        },
    },
}
SAGEMAKER_RESPONSES: dict[int | str, Schema] = {
    200: {
        "description": "One prediction per row, in the `Accept` format.",
        "content": {
            codecs.CSV: {
                "schema": _TEXT,
                "example": "".join(f"{row['prediction']}\n" for row in _HOUSE_PREDICTIONS),
            },
            codecs.JSON: {
                "schema": {
                    "type": "object",
                    "properties": {"predictions": V1_RESPONSE["properties"]["predictions"]},
                },
                "example": {"predictions": _HOUSE_PREDICTIONS},
            },
            codecs.JSONL: {"schema": _TEXT},
            codecs.PARQUET: {"schema": _BINARY},
            codecs.ARROW: {"schema": _BINARY},
        },
    },
    400: _sagemaker_error(
        "The body does not fit the model, or an endpoint with variants was sent a target model.",
        "ValidationError",
        "column 'contract' must be string, got int64",
    ),
    404: _sagemaker_error(
        "The model, version, alias or endpoint does not exist.",
        "ValidationError",
        "model 'ghost' is not registered",
    ),
    413: _sagemaker_error(
        "The body exceeds MMSERVE_MAX_PAYLOAD_BYTES.",
        "ValidationError",
        "the request body exceeds the limit of 6291456 bytes",
    ),
    415: _sagemaker_error(
        "The Content-Type or Accept is not one of the formats above.",
        "ValidationError",
        f"unsupported format 'text/plain'; use one of {', '.join(sagemaker.ACCEPTED)}",
    ),
    424: _sagemaker_error(
        "The model raised, or did not answer within MMSERVE_REQUEST_TIMEOUT_S "
        "(`OriginalStatusCode`: 500 or 504).",
        "ModelError",
        "model churn:1 failed: ValueError: ...",
    ),
    429: _sagemaker_error(
        "The model is still loading (with `Retry-After`).",
        "ModelNotReadyException",
        "model churn:1 is still loading after 30 s; retry shortly",
    ),
    500: _sagemaker_error(
        "An unexpected failure (the error_id is in the server log; never a stack trace).",
        "InternalFailure",
        "internal error; see the server log",
    ),
    503: _sagemaker_error(
        "The model or the server is at its concurrency limit (with `Retry-After`), or the "
        "store is unavailable.",
        "ServiceUnavailable",
        "model 'churn' already has 8 requests in flight, its limit; retry later",
    ),
}
SAGEMAKER_ENDPOINT_INVOCATIONS: Schema = {
    "parameters": [
        _target_model(
            "For a name no endpoint is applied under: the model to invoke, as on /invocations "
            "(without it, the model so named answers). An applied endpoint refuses it (400): "
            "its variants fix its models; X-Amzn-SageMaker-Target-Variant pins one."
        )
    ],
    "requestBody": SAGEMAKER_INVOCATIONS["requestBody"],
}

# -- error answers every route can give ------------------------------------------------------

_COMMON: dict[int, Schema] = {
    400: error(
        "A name, reference, token or body the route cannot read.",
        "invalid model name 'Bad Name': use lowercase letters, digits, '.', '_' and '-'",
    ),
    401: error(
        "A missing or wrong API key or admin token (with `WWW-Authenticate`).",
        "a valid admin token is required: 'Authorization: Bearer <token>'",
    ),
    403: error(
        "Management routes are off: MMSERVE_ADMIN_TOKEN is not set.",
        "management routes are disabled; set MMSERVE_ADMIN_TOKEN to enable them",
    ),
    404: error("What the path names does not exist.", "model 'ghost' is not registered"),
    413: _ERRORS[413],
    422: error(
        "The body or a parameter is not what the route takes.", "body.name: Field required"
    ),
    500: error(
        "An unexpected failure (the error_id is in the server log; never a stack trace).",
        "internal error; see the server log",
    ),
    503: error(
        "The store, the broker or Redis is unavailable, or a model is still loading "
        "(with `Retry-After`).",
        "the store s3://models/prod is unavailable: connection refused",
    ),
}


def declare_errors(spec: Schema, probe: Callable[[str], bool], api_key: bool) -> Schema:
    """``spec`` with the error answers each operation can give, read from what the spec
    already says of it: every route can fail unexpectedly (500) and, but for the probes, find
    the store away (503); a path parameter can be malformed (400) or name nothing (404); a
    body can be unreadable (400), too large (413) or invalid (422); the admin token's routes
    are off without one (403) and refuse a wrong one (401), as every route does without the
    API key when one is set. ``probe(path)``: whether anyone may call ``path`` (health,
    metrics). Codes a route declares itself keep its own description."""
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            codes = {500}
            if not probe(path):
                codes.add(503)
            if any(p.get("in") == "path" for p in operation.get("parameters", [])):
                codes |= {400, 404}
            if "requestBody" in operation:
                codes |= {400, 413, 422}
            if any("AdminToken" in s for s in operation.get("security", [])):
                codes |= {401, 403}
            if api_key and not probe(path):
                codes.add(401)
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(str(code), deepcopy(_COMMON[code]))
    return spec
