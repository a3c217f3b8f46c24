"""The documented answers of every route a client calls: fields, examples, error shapes.

The handlers answer with ``json_response`` (not pydantic models, to keep the hot path
cheap), so FastAPI can't infer what they return; this module is the data the OpenAPI
document shows for each answer (``openapi.install_openapi`` adds it). Field names here
are the handlers' own: tests/unit/test_response_docs.py compares every documented route
with a real answer, so the docs can't drift from the code.
"""

from __future__ import annotations

from typing import Any

# A field: (JSON schema of its value, description). Optional fields are listed apart, so
# the docs say which keys every answer has and which only some have.
Field = tuple[dict[str, Any], str]

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_NUM: dict[str, Any] = {"type": "number"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_OBJ: dict[str, Any] = {"type": "object"}
_ARR: dict[str, Any] = {"type": "array"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}


def _object(fields: dict[str, Field], optional: dict[str, Field] | None = None) -> dict[str, Any]:
    optional = optional or {}
    properties = {
        name: {**schema, "description": description}
        for name, (schema, description) in (fields | optional).items()
    }
    return {"type": "object", "properties": properties, "required": list(fields)}


# --- error bodies --------------------------------------------------------------------

NATIVE_ERROR = _object(
    {
        "error": (_STR, "machine-readable code, e.g. invalid_input, model_not_found"),
        "message": (_STR, "what was wrong, for people"),
        "request_id": (_STR, "the X-Request-ID of this request, for the logs"),
    },
    {
        "field": (_STR, "the first offending field (input errors only)"),
        "reason": (_STR, "why that field was refused (input errors only)"),
        "errors": (
            {
                "type": "array",
                "items": _object(
                    {"field": (_STR, "offending field"), "reason": (_STR, "why it was refused")}
                ),
            },
            "every offending field (input errors only)",
        ),
    },
)
NATIVE_ERROR_EXAMPLE = {
    "error": "invalid_input",
    "message": "features.age: must be <= 100 (got 140)",
    "field": "features.age",
    "reason": "must be <= 100 (got 140)",
    "errors": [{"field": "features.age", "reason": "must be <= 100 (got 140)"}],
    "request_id": "7da45f2b827c1f9b79b7e55c85577296",
}
# V1 (TF Serving) and V2 (Open Inference Protocol) clients expect a bare message.
MESSAGE_ERROR = _object({"error": (_STR, "what was wrong")})
MESSAGE_ERROR_EXAMPLE = {
    "error": "body: expected exactly one of 'instances' (rows) or 'inputs' (columns)"
}

# --- native prediction answers -------------------------------------------------------

_ROW: dict[str, Field] = {
    "prediction": (_INT, "the predicted class index (or value, for regression)"),
    "prediction_class": ({"type": ["string", "null"]}, "the predicted class's name"),
    "class_name": ({"type": ["string", "null"]}, "the same as prediction_class (an alias)"),
    "cached": (_BOOL, "whether the answer came from the prediction cache"),
}
_ROW_OPTIONAL: dict[str, Field] = {
    "probability": (_NUM, "probability of the positive class (binary models)"),
    "probabilities": (
        {"type": "object", "additionalProperties": _NUM},
        "probability per class name (multiclass models)",
    ),
}
_ROW_EXAMPLE = {
    "prediction": 1,
    "probability": 0.83,
    "prediction_class": "churns",
    "class_name": "churns",
    "cached": False,
}
SINGLE = _object(
    {
        **_ROW,
        "model_name": (_STR, "the model that answered"),
        "model_version": (_STR, "the version that answered"),
        "prediction_id": (_STR, "this prediction's id (in the prediction log)"),
        "latency_ms": (_NUM, "time spent in the replica, milliseconds"),
        "timestamp": (_TIME, "when the answer was made (UTC)"),
    },
    _ROW_OPTIONAL,
)
SINGLE["description"] = "one row's answer"
SINGLE_EXAMPLE = {
    **_ROW_EXAMPLE,
    "model_name": "churn",
    "model_version": "2",
    "prediction_id": "c344fcbfcffea2e6641348dece34bfe2",
    "latency_ms": 4.386,
    "timestamp": "2026-12-02T03:48:33.063Z",
}
BATCH = _object(
    {
        "predictions": (
            {"type": "array", "items": _object(_ROW, _ROW_OPTIONAL)},
            "one answer per row, in request order",
        ),
        "batch_size": (_INT, "number of rows"),
        "model_name": (_STR, "the model that answered"),
        "model_version": (_STR, "the version that answered"),
        "total_time_ms": (_NUM, "time spent in the replica, milliseconds"),
        "timestamp": (_TIME, "when the answer was made (UTC)"),
    }
)
BATCH_EXAMPLE = {
    "predictions": [_ROW_EXAMPLE, {**_ROW_EXAMPLE, "prediction": 0, "probability": 0.12,
                                   "prediction_class": "stays", "class_name": "stays"}],
    "batch_size": 2,
    "model_name": "churn",
    "model_version": "2",
    "total_time_ms": 3.28,
    "timestamp": "2026-12-02T03:48:33.113Z",
}  # fmt: skip

# --- V1 / V2 prediction answers ------------------------------------------------------

V1_PREDICT = _object(
    {
        "predictions": (
            {"type": "array", "items": _OBJ},
            "one object per instance: the model's outputs by name",
        )
    }
)
V1_PREDICT_EXAMPLE = {"predictions": [{"probability": 0.83, "prediction": 1}]}
_TENSOR = _object(
    {
        "name": (_STR, "output name"),
        "datatype": (_STR, "tensor type, e.g. FP32, INT64"),
        "shape": ({"type": "array", "items": _INT}, "tensor shape"),
    },
    {"data": (_ARR, "values, row-major (absent when sent as binary data)")},
)
V2_INFER = _object(
    {
        "model_name": (_STR, "the model that answered"),
        "model_version": (_STR, "the version that answered"),
        "outputs": ({"type": "array", "items": _TENSOR}, "the output tensors"),
    },
    {
        "id": (_STR, "the request's id, echoed"),
        "parameters": (_OBJ, "answer parameters (binary data sizes)"),
    },
)
V2_INFER_EXAMPLE = {
    "model_name": "churn",
    "model_version": "2",
    "outputs": [
        {"name": "probability", "datatype": "FP32", "shape": [1], "data": [0.83]},
        {"name": "prediction", "datatype": "INT64", "shape": [1], "data": [1]},
    ],
}

# --- service routes ------------------------------------------------------------------

_VERSION_FIELDS: dict[str, Field] = {
    "name": (_STR, "model name"),
    "version": (_STR, "version"),
    "default": (_BOOL, "whether it is the model's default version"),
    "task": (_STR, "binary_classification, multiclass_classification or regression"),
    "format": (_STR, "torchscript or torch_export"),
    "sha256": (_STR, "sha256 of the weights file"),
    "loaded_at": (_TIME, "when it was loaded here"),
}
_VERSION_EXAMPLE = {
    "name": "churn",
    "version": "2",
    "default": True,
    "task": "binary_classification",
    "format": "torch_export",
    "sha256": "86f58ff46e7d65ea91da8affe91ba831c7979cf4e4a159fa327a09c24339a7b6",
    "loaded_at": "2026-12-02T03:48:31.668457+00:00",
}
_DETAIL_FIELDS: dict[str, Field] = {
    "description": (_STR, "what the model does (manifest)"),
    "inputs": (
        {"type": "array", "items": _OBJ},
        "input features in order: name, dtype, min, max, description, example",
    ),
    "outputs": (_OBJ, "output description (class names)"),
    "metadata": (_OBJ, "free-form manifest metadata (training, architecture)"),
    "size_bytes": (_INT, "size of the weights file"),
}
_DETAIL_EXAMPLE = {
    "description": "Customer churn, MLP 10-32-16-1.",
    "inputs": [
        {"name": "age", "dtype": "int", "min": 18.0, "max": 100.0,
         "description": "customer age in years", "example": 35.0}
    ],
    "outputs": {"classes": ["stays", "churns"]},
    "metadata": {"architecture": "MLP 10-32-16-1"},
    "size_bytes": 23383,
}  # fmt: skip
_INSTANCE: Field = (_STR, "the replica that answered")
_MODEL_FIELDS: dict[str, Field] = {
    "name": (_STR, "model name"),
    "default_version": (_STR, "the version unversioned routes run"),
    "pinned": (_BOOL, "whether an admin pinned the default version"),
    "versions": ({"type": "array", "items": _object(_VERSION_FIELDS)}, "loaded versions"),
}
_MODEL_EXAMPLE = {
    "name": "churn",
    "default_version": "2",
    "pinned": False,
    "versions": [_VERSION_EXAMPLE],
}
_STATS = _object(
    {
        "scope": (_STR, "replica (this process) or fleet (from Prometheus)"),
        "instance": _INSTANCE,
        "requests_total": (_INT, "requests answered"),
        "requests_per_second": (_NUM, "recent request rate"),
        "latency_p50_ms": ({"type": ["number", "null"]}, "median latency, milliseconds"),
        "latency_p99_ms": ({"type": ["number", "null"]}, "99th percentile latency, ms"),
        "error_rate": (_NUM, "share of 5xx answers"),
        "client_error_rate": (_NUM, "share of 4xx answers"),
        "predictions_total": (_INT, "rows predicted"),
        "cache_hit_ratio": ({"type": ["number", "null"]}, "prediction cache hit ratio"),
        "rate_limited_total": (_INT, "requests refused by the rate limiter"),
    },
    {
        "feature_drift_psi": (
            {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": _NUM,
                    },
                },
            },
            "input drift: model → version → input → PSI against the training data "
            "(the fleet: last 30 minutes; a replica: since it started; 200 rows at least)",
        ),
    },
)
_STATS_EXAMPLE = {
    "scope": "replica",
    "instance": "replica-1",
    "requests_total": 120,
    "requests_per_second": 4.2,
    "latency_p50_ms": 8.75,
    "latency_p99_ms": 24.1,
    "error_rate": 0.0,
    "client_error_rate": 0.01,
    "predictions_total": 310,
    "cache_hit_ratio": 0.4,
    "rate_limited_total": 0,
    "feature_drift_psi": {"churn": {"2": {"age": 0.0123, "income": 0.2871}}},
}
_ADMIN = _object(
    {
        "action": (_STR, "load or unload"),
        "model": (_STR, "model name"),
        "version": ({"type": ["string", "null"]}, "version (null: every version)"),
        "command_id": ({"type": ["string", "null"]}, "id of the fleet command"),
        "propagated": (_BOOL, "whether the command goes to every replica (Redis)"),
        "applied_here": (_BOOL, "whether this replica applied it"),
        "detail": (_STR, "what happened here"),
        "instance": _INSTANCE,
    },
    {"sha256": (_STR, "sha256 of the loaded weights (load only)")},
)
_ADMIN_EXAMPLE = {
    "action": "load",
    "model": "churn",
    "version": "2",
    "sha256": "86f58ff46e7d65ea91da8affe91ba831c7979cf4e4a159fa327a09c24339a7b6",
    "command_id": "1764646113000-0",
    "propagated": True,
    "applied_here": True,
    "detail": "loaded churn 2",
    "instance": "replica-1",
}
_EMPTY = _object({})

_HEALTH = _object(
    {
        "status": (_STR, "ok"),
        "model_loaded": (_BOOL, "whether at least one model is loaded"),
        "timestamp": (_TIME, "now (UTC)"),
        "instance": _INSTANCE,
        "models_loaded": (_INT, "number of loaded model versions"),
        "models": (
            {"type": "object", "additionalProperties": {"type": "array", "items": _STR}},
            "loaded versions per model",
        ),
        "default_model": ({"type": ["string", "null"]}, "the model /predict runs"),
        "default_model_version": ({"type": ["string", "null"]}, "its default version"),
        "loaded_at": (_NULLABLE_TIME, "when the default version was loaded"),
        "started_at": (_TIME, "when this replica started"),
        "uptime_seconds": (_NUM, "seconds since started_at"),
        "last_prediction_at": (_NULLABLE_TIME, "the last prediction's time, or null"),
        "queued_rows": (_INT, "rows waiting for the micro-batcher"),
        "load_failures": (_INT, "model versions refused at load"),
        "control": (_OBJ, "fleet control (admin commands over Redis) state"),
    }
)
_HEALTH_EXAMPLE = {
    "status": "ok",
    "model_loaded": True,
    "timestamp": "2026-12-02T03:48:32.919522+00:00",
    "instance": "replica-1",
    "models_loaded": 3,
    "models": {"churn": ["1", "2"], "iris": ["1"]},
    "default_model": "churn",
    "default_model_version": "2",
    "loaded_at": "2026-12-02T03:48:31.668457+00:00",
    "started_at": "2026-12-02T03:48:22.528981+00:00",
    "uptime_seconds": 10.391,
    "last_prediction_at": None,
    "queued_rows": 0,
    "load_failures": 0,
    "control": {"enabled": False, "following": False, "follower_restarts": 0,
                "skipped_commands": 0},
}  # fmt: skip

# (method, path) → (200 schema, example, error schema, error example)
Documented = tuple[dict[str, Any], Any, dict[str, Any], dict[str, Any]]
_NATIVE = (NATIVE_ERROR, NATIVE_ERROR_EXAMPLE)
_MESSAGE = (MESSAGE_ERROR, MESSAGE_ERROR_EXAMPLE)
_V1_STATUS = _object(
    {
        "model_version_status": (
            {"type": "array", "items": _OBJ},
            "per version: version, state (AVAILABLE), status {error_code, error_message}",
        )
    }
)
_V1_STATUS_EXAMPLE = {
    "model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}
_V1_METADATA = _object(
    {
        "model_spec": (_OBJ, "name, signature_name, version"),
        "metadata": (_OBJ, "signature_def: the serving_default signature's inputs and outputs"),
    }
)
_V1_METADATA_EXAMPLE = {
    "model_spec": {"name": "churn", "signature_name": "", "version": "2"},
    "metadata": {"signature_def": {"signature_def": {"serving_default": {}}}},
}
_V2_METADATA = _object(
    {
        "name": (_STR, "model name"),
        "versions": ({"type": "array", "items": _STR}, "loaded versions"),
        "platform": (_STR, "pytorch_torchscript or pytorch_export"),
        "inputs": ({"type": "array", "items": _OBJ}, "input tensors: name, datatype, shape"),
        "outputs": ({"type": "array", "items": _OBJ}, "output tensors: name, datatype, shape"),
    }
)
_V2_METADATA_EXAMPLE = {
    "name": "churn",
    "versions": ["1", "2"],
    "platform": "pytorch_export",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}],
    "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
}
_V2_READY = _object(
    {
        "name": (_STR, "model name"),
        "version": (_STR, "version"),
        "ready": (_BOOL, "true (an absent model answers 404)"),
    }
)
_V2_READY_EXAMPLE = {"name": "churn", "version": "2", "ready": True}
_V2_INDEX: dict[str, Any] = {
    "type": "array",
    "items": _object(
        {
            "name": (_STR, "model name"),
            "version": (_STR, "version on disk"),
            "state": (_STR, "READY or UNAVAILABLE"),
        },
        {"reason": (_STR, "why it is not loaded")},
    ),
}
_V2_INDEX_EXAMPLE = [{"name": "churn", "version": "2", "state": "READY"}]

RANK = _object(
    {
        "user_id": (_INT, "the user the items were ranked for"),
        "predictions": (
            {
                "type": "array",
                "items": _object(
                    {
                        "item_id": (_INT, "a candidate item"),
                        "score": (_NUM, "the model's score for (user, item, context)"),
                        "rank": (_INT, "1 for the highest score; ties keep request order"),
                    }
                ),
            },
            "the items by score, highest first (the top_k first, if given)",
        ),
        "model_name": (_STR, "the ranker that answered"),
        "model_version": (_STR, "the version that answered"),
        "latency_ms": (_NUM, "time spent in the replica, milliseconds"),
        "timestamp": (_TIME, "when the answer was made (UTC)"),
        "request_id": (_STR, "this request's id (in the prediction log)"),
        "defaults_used": (
            _OBJ,
            "cold start: whether the user's features were defaults (user), and the item ids "
            "whose features were (items)",
        ),
    }
)
RANK_EXAMPLE = {
    "user_id": 123,
    "predictions": [
        {"item_id": 1002, "score": 0.71, "rank": 1},
        {"item_id": 1001, "score": 0.42, "rank": 2},
    ],
    "model_name": "feed",
    "model_version": "1",
    "latency_ms": 2.9,
    "timestamp": "2026-12-02T03:48:33.113Z",
    "request_id": "9f2c4e0b7a5d4c1e8f3a6b2d0c9e7f15",
    "defaults_used": {"user": False, "items": []},
}

_ROUTES: dict[tuple[str, str], Documented] = {}


def _add(methods_paths: list[str], schema: dict[str, Any], example: Any, native: bool) -> None:
    error, error_example = _NATIVE if native else _MESSAGE
    for item in methods_paths:
        method, path = item.split(" ", 1)
        _ROUTES[(method, path)] = (schema, example, error, error_example)


_add(
    [
        "POST /predict",
        "POST /models/{name}/predict",
        "POST /models/{name}/versions/{version}/predict",
    ],
    # The matrix form (features as a list of rows) is answered like the batch route.
    {"oneOf": [SINGLE, {**BATCH, "description": "the matrix form's answer"}]},
    SINGLE_EXAMPLE,
    native=True,
)
_add(
    [
        "POST /rank",
        "POST /models/{name}/rank",
        "POST /models/{name}/versions/{version}/rank",
    ],
    RANK,
    RANK_EXAMPLE,
    native=True,
)
_add(
    [
        "POST /predict/batch",
        "POST /batch_predict",
        "POST /models/{name}/predict/batch",
        "POST /models/{name}/versions/{version}/predict/batch",
    ],
    BATCH,
    BATCH_EXAMPLE,
    native=True,
)
_add(
    ["POST /v1/models/{name}:predict", "POST /v1/models/{name}/versions/{version}:predict"],
    V1_PREDICT,
    V1_PREDICT_EXAMPLE,
    native=False,
)
_add(
    ["POST /v2/models/{name}/infer", "POST /v2/models/{name}/versions/{version}/infer"],
    V2_INFER,
    V2_INFER_EXAMPLE,
    native=False,
)
_add(["GET /health"], _HEALTH, _HEALTH_EXAMPLE, native=True)
_add(
    ["GET /ready"],
    _object(
        {
            "status": (_STR, "ready (503 with the reason while not ready)"),
            "models": (
                {"type": "object", "additionalProperties": _STR},
                "default version per loaded model",
            ),
        }
    ),
    {"status": "ready", "models": {"churn": "2", "iris": "1"}},
    native=True,
)
_add(
    ["GET /"],
    _object(
        {
            "name": (_STR, "modelgate"),
            "version": (_STR, "modelgate's version"),
            "instance": _INSTANCE,
            "links": ({"type": "object", "additionalProperties": _STR}, "where things are"),
        }
    ),
    {"name": "modelgate", "version": "0.1.0", "instance": "replica-1",
     "links": {"docs": "/docs", "health": "/health", "predict": "/predict"}},
    native=True,
)  # fmt: skip
_add(
    ["GET /models"],
    _object(
        {
            "instance": _INSTANCE,
            "default_model": ({"type": ["string", "null"]}, "the model /predict runs"),
            "models": ({"type": "array", "items": _object(_MODEL_FIELDS)}, "loaded models"),
        }
    ),
    {"instance": "replica-1", "default_model": "churn", "models": [_MODEL_EXAMPLE]},
    native=True,
)
_add(
    ["GET /models/{name}"],
    _object(
        {
            "instance": _INSTANCE,
            **_MODEL_FIELDS,
            "versions": (
                {"type": "array", "items": _object(_VERSION_FIELDS | _DETAIL_FIELDS)},
                "loaded versions, with their manifests",
            ),
            "fleet": (
                {"type": "array", "items": _OBJ},
                "what every live worker runs of it: instance, pid, default_version, versions",
            ),
        }
    ),
    {
        "instance": "replica-1",
        **_MODEL_EXAMPLE,
        "versions": [_VERSION_EXAMPLE | _DETAIL_EXAMPLE],
        "fleet": [
            {"instance": "replica-1", "pid": 4242, "default_version": "2", "versions": ["1", "2"]}
        ],
    },
    native=True,
)
_add(
    ["GET /model/info"],
    _object({"instance": _INSTANCE, **_VERSION_FIELDS, **_DETAIL_FIELDS}),
    {"instance": "replica-1", **_VERSION_EXAMPLE, **_DETAIL_EXAMPLE},
    native=True,
)
_add(["GET /stats", "GET /stats/replica"], _STATS, _STATS_EXAMPLE, native=True)
_add(
    ["POST /admin/models/{name}/load", "POST /admin/models/{name}/unload"],
    _ADMIN,
    _ADMIN_EXAMPLE,
    native=True,
)
_add(
    ["GET /v1/models/{name}", "GET /v1/models/{name}/versions/{version}"],
    _V1_STATUS,
    _V1_STATUS_EXAMPLE,
    native=False,
)
_add(
    ["GET /v1/models/{name}/metadata", "GET /v1/models/{name}/versions/{version}/metadata"],
    _V1_METADATA,
    _V1_METADATA_EXAMPLE,
    native=False,
)
_add(
    ["GET /v2"],
    _object(
        {
            "name": (_STR, "server name"),
            "version": (_STR, "server version"),
            "extensions": ({"type": "array", "items": _STR}, "supported extensions"),
        }
    ),
    {"name": "modelgate", "version": "0.1.0", "extensions": ["binary_tensor_data"]},
    native=False,
)
_add(["GET /v2/health/live"], _object({"live": (_BOOL, "true")}), {"live": True}, native=False)
_add(
    ["GET /v2/health/ready"],
    _object({"ready": (_BOOL, "whether models are loaded (503 when not)")}),
    {"ready": True},
    native=False,
)
_add(
    ["GET /v2/models/{name}", "GET /v2/models/{name}/versions/{version}"],
    _V2_METADATA,
    _V2_METADATA_EXAMPLE,
    native=False,
)
_add(
    ["GET /v2/models/{name}/ready", "GET /v2/models/{name}/versions/{version}/ready"],
    _V2_READY,
    _V2_READY_EXAMPLE,
    native=False,
)
_add(["POST /v2/repository/index"], _V2_INDEX, _V2_INDEX_EXAMPLE, native=False)
_add(
    ["POST /v2/repository/models/{name}/load", "POST /v2/repository/models/{name}/unload"],
    _EMPTY,
    {},
    native=False,
)


def documented() -> dict[tuple[str, str], Documented]:
    """Every documented (method, path) and its answer's schema, example and error shape."""
    return dict(_ROUTES)


def add_responses(schema: dict[str, Any]) -> None:
    """Give every documented operation of an OpenAPI document its answers' shapes."""
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            entry = _ROUTES.get((method.upper(), path))
            if entry is None or not isinstance(operation, dict):
                continue
            body, example, error, error_example = entry
            responses = operation.setdefault("responses", {})
            # FastAPI's 422 describes its own validation errors, which these routes
            # never answer (modelgate parses and validates bodies itself).
            responses.pop("422", None)
            ok = responses.setdefault("200", {"description": "Successful Response"})
            ok["content"] = {"application/json": {"schema": body, "example": example}}
            responses["4XX"] = {
                "description": "Refused: bad input, unknown model, missing key, over quota",
                "content": {"application/json": {"schema": error, "example": error_example}},
            }
