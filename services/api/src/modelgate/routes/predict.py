"""Native prediction routes: single and batch, for the default model or a named one.

Routes stay thin: read the body, pick the model version, validate, call the service,
shape the answer. Request bodies are parsed by modelgate (not FastAPI) so that malformed
JSON is a 400 and every bad field is a 422 naming it; the OpenAPI request schemas and
examples are added in ``openapi.py`` from the manifests. The request state (the
lifespan's objects, and the facts for the access line) is used as the plain dict under
``request.state``: each ``request.state.x`` costs a property and a ``__getattr__``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgate.deps import json_response, read_body
from modelgate.ids import new_id
from modelgate.ratelimit import BATCH_SCOPE, PREDICT_SCOPE, quota
from modelgate.service import BatchResult, PredictionService, elapsed_ms
from modelgate.settings import Settings
from modelgate.timefmt import iso_utc
from modelgate.validation import body_version

SINGLE = "single"
BATCH = "batch"


def _headers(result: BatchResult) -> list[tuple[bytes, bytes]]:
    """``X-Model-Name``, ``X-Model-Version``, ``X-Cache``, ``X-Batch-Size``, encoded."""
    return [
        (b"x-model-name", result.model.name.encode()),
        (b"x-model-version", result.model.version.encode()),
        (b"x-cache", b"HIT" if all(result.cached) else b"MISS"),
        # Rows in the tensor call this request rode in: shows dynamic batching at work.
        (b"x-batch-size", b"%d" % result.batch_rows),
    ]


def _note(state: dict[str, Any], result: BatchResult) -> None:
    """Facts for the access-log line."""
    state["model"] = result.model.name
    state["version"] = result.model.version
    state["cache"] = "hit" if all(result.cached) else "miss"
    state["batch_rows"] = result.batch_rows


async def predict_single(request: Request, name: str | None, version: str | None) -> Response:
    started = time.perf_counter()
    state = request.scope["state"]
    service: PredictionService = state["service"]
    settings: Settings = state["settings"]
    raw = await read_body(request, settings.max_body_bytes)
    model = service.repository.get(name, body_version(raw, version))
    rows = service.validator(model).single_body(raw)
    result = await service.run(model, rows)
    _note(state, result)
    body: dict[str, Any] = {
        **result.outputs[0],
        "model_name": model.name,
        "model_version": model.version,
        "prediction_id": new_id(),
        "cached": result.cached[0],
        "latency_ms": elapsed_ms(started),
        "timestamp": iso_utc(),
    }
    return json_response(body, raw=_headers(result))


async def predict_batch(request: Request, name: str | None, version: str | None) -> Response:
    started = time.perf_counter()
    state = request.scope["state"]
    service: PredictionService = state["service"]
    settings: Settings = state["settings"]
    raw = await read_body(request, settings.max_body_bytes)
    model = service.repository.get(name, body_version(raw, version))
    rows = service.validator(model).batch_body(raw, settings.max_batch_instances)
    result = await service.run(model, rows)
    _note(state, result)
    predictions = [
        {**out, "cached": hit} for out, hit in zip(result.outputs, result.cached, strict=True)
    ]
    body = {
        "predictions": predictions,
        "batch_size": len(predictions),
        "model_name": model.name,
        "model_version": model.version,
        "total_time_ms": elapsed_ms(started),
        "timestamp": iso_utc(),
    }
    return json_response(body, raw=_headers(result))


def build_router() -> APIRouter:
    """The prediction routes, each with its route class's quota."""
    # Every prediction route needs a client key when keys are configured; ``quota`` checks
    # the key first, then the quota, then runs the handler. No FastAPI dependencies on
    # this hot path: each costs a solve per request, for what are attribute reads.
    router = APIRouter(tags=["predict"])
    single_limit = quota(PREDICT_SCOPE)
    batch_limit = quota(BATCH_SCOPE)

    @router.post("/predict", name="predict", openapi_extra={"x-modelgate-body": SINGLE})
    @single_limit
    async def predict(request: Request) -> Response:
        """Predict one instance with the default model's default version."""
        return await predict_single(request, None, None)

    @router.post("/predict/batch", name="predict_batch", openapi_extra={"x-modelgate-body": BATCH})
    @batch_limit
    async def batch(request: Request) -> Response:
        """Predict up to ``max_batch_instances`` instances with the default model."""
        return await predict_batch(request, None, None)

    @router.post("/batch_predict", name="batch_predict", openapi_extra={"x-modelgate-body": BATCH})
    @batch_limit
    async def batch_alias(request: Request) -> Response:
        """Alias of ``POST /predict/batch`` (the tutorials' name)."""
        return await predict_batch(request, None, None)

    @router.post(
        "/models/{name}/predict", name="model_predict", openapi_extra={"x-modelgate-body": SINGLE}
    )
    @single_limit
    async def model_predict(name: str, request: Request) -> Response:
        """Predict one instance with a named model's default version."""
        return await predict_single(request, name, None)

    @router.post(
        "/models/{name}/predict/batch",
        name="model_predict_batch",
        openapi_extra={"x-modelgate-body": BATCH},
    )
    @batch_limit
    async def model_batch(name: str, request: Request) -> Response:
        """Batch prediction with a named model's default version."""
        return await predict_batch(request, name, None)

    @router.post(
        "/models/{name}/versions/{version}/predict",
        name="version_predict",
        openapi_extra={"x-modelgate-body": SINGLE},
    )
    @single_limit
    async def version_predict(name: str, version: str, request: Request) -> Response:
        """Predict one instance with a specific model version."""
        return await predict_single(request, name, version)

    @router.post(
        "/models/{name}/versions/{version}/predict/batch",
        name="version_predict_batch",
        openapi_extra={"x-modelgate-body": BATCH},
    )
    @batch_limit
    async def version_batch(name: str, version: str, request: Request) -> Response:
        """Batch prediction with a specific model version."""
        return await predict_batch(request, name, version)

    return router
