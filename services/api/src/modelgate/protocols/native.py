"""modelgate's own API: single and batch, for the default model or a named one.

Bodies are parsed by modelgate (not FastAPI) so that malformed JSON is a 400 and every
bad field is a 422 naming it; the OpenAPI request schemas and examples are added in
``openapi.py`` from the manifests (the ``x-modelgate-body`` marker says which). A body
may name the version (``"model_version"``), so it is read before the model is picked.
Errors have the rich body of ``errors.error_body``. A single route also takes the matrix
form, ``{"features": [[...], [...]]}`` (one tutorial's whole API): rows in manifest order,
answered like a batch and counted by the batch quota.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from modelgate.edge.deps import json_response, read_body
from modelgate.edge.ids import new_id
from modelgate.edge.worker_state import WorkerState
from modelgate.errors import error_response
from modelgate.inference.service import Prediction, elapsed_ms
from modelgate.inference.validation import body_version
from modelgate.observability.timefmt import iso_utc
from modelgate.protocols.answers import native_answers
from modelgate.protocols.base import Decoded, Protocol, Route
from modelgate.shared.ratelimit import BATCH_SCOPE, PREDICT_SCOPE

SINGLE = "single"
BATCH = "batch"
MATRIX = "matrix"  # Decoded.context of a single route's body holding many rows


async def decode_single(
    request: Request, worker: WorkerState, name: str | None, version: str | None
) -> Decoded:
    started = time.perf_counter()
    settings = worker.settings
    raw = await read_body(request, settings.max_body_bytes)
    model = worker.repository.get(name, body_version(raw, version))
    rows, matrix = worker.service.validator(model).features_body(raw, settings.max_batch_instances)
    if matrix:  # {"features": [[...], [...]]}: answered and counted as a batch
        return Decoded(model, rows, started, MATRIX, BATCH_SCOPE)
    return Decoded(model, rows, started)


async def decode_batch(
    request: Request, worker: WorkerState, name: str | None, version: str | None
) -> Decoded:
    started = time.perf_counter()
    settings = worker.settings
    raw = await read_body(request, settings.max_body_bytes)
    model = worker.repository.get(name, body_version(raw, version))
    rows = worker.service.validator(model).batch_body(raw, settings.max_batch_instances)
    return Decoded(model, rows, started)


def _headers(result: Prediction) -> list[tuple[bytes, bytes]]:
    """``X-Model-Name``, ``X-Model-Version``, ``X-Cache``, ``X-Batch-Size``, encoded."""
    return [
        (b"x-model-name", result.model.name.encode()),
        (b"x-model-version", result.model.version.encode()),
        (b"x-cache", b"HIT" if all(result.cached) else b"MISS"),
        # Rows in the tensor call this request rode in: shows dynamic batching at work.
        (b"x-batch-size", b"%d" % result.batch_rows),
    ]


def encode_single(decoded: Decoded, result: Prediction) -> Response:
    if decoded.context is MATRIX:
        return encode_batch(decoded, result)
    model = decoded.model
    body: dict[str, Any] = {
        **native_answers(model.manifest, result.outputs)[0],
        "model_name": model.name,
        "model_version": model.version,
        "prediction_id": new_id(),
        "cached": result.cached[0],
        "latency_ms": elapsed_ms(decoded.started),
        "timestamp": iso_utc(),
    }
    return json_response(body, raw=_headers(result))


def encode_batch(decoded: Decoded, result: Prediction) -> Response:
    model = decoded.model
    answers = native_answers(model.manifest, result.outputs)
    predictions = [{**out, "cached": hit} for out, hit in zip(answers, result.cached, strict=True)]
    body = {
        "predictions": predictions,
        "batch_size": len(predictions),
        "model_name": model.name,
        "model_version": model.version,
        "total_time_ms": elapsed_ms(decoded.started),
        "timestamp": iso_utc(),
    }
    return json_response(body, raw=_headers(result))


def _single(path: str, name: str, doc: str) -> Route:
    return Route(
        path, name, doc, PREDICT_SCOPE, decode_single, encode_single, {"x-modelgate-body": SINGLE}
    )


def _batch(path: str, name: str, doc: str) -> Route:
    return Route(
        path, name, doc, BATCH_SCOPE, decode_batch, encode_batch, {"x-modelgate-body": BATCH}
    )


PROTOCOL = Protocol(
    name="native",
    tag="predict",
    routes=(
        _single("/predict", "predict",
                "Predict one instance with the default model's default version."),
        _batch("/predict/batch", "predict_batch",
               "Predict up to ``max_batch_instances`` instances with the default model."),
        _batch("/batch_predict", "batch_predict",
               "Alias of ``POST /predict/batch`` (the tutorials' name)."),
        _single("/models/{name}/predict", "model_predict",
                "Predict one instance with a named model's default version."),
        _batch("/models/{name}/predict/batch", "model_predict_batch",
               "Batch prediction with a named model's default version."),
        _single("/models/{name}/versions/{version}/predict", "version_predict",
                "Predict one instance with a specific model version."),
        _batch("/models/{name}/versions/{version}/predict/batch", "version_predict_batch",
               "Batch prediction with a specific model version."),
    ),
    error=error_response,
)  # fmt: skip
