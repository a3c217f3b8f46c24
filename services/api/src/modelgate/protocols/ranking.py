"""Ranking: a user and its candidate items → the items ranked by a ranking model (issue 21).

    POST /models/{name}/rank    {"user_id": 123, "item_ids": [1001, 1002],
    POST /rank                   "context": {"device": "mobile"}, "top_k": 10}

Run by the one prediction handler (``handler.py``) like every protocol's routes::

    guard → decode: parse, fetch the features (one Redis round trip), assemble the
            [n_items, F] rows → PredictionService.run (batcher; no cache, service.py)
          → encode: order the scores, answer

* ``/rank`` ranks with the default ranker: the only ranking model served, or the first by
  name when there are several (the repository's default model is usually a classifier).
* Quota: one unit of the ``batch`` class per request, as ``/predict/batch`` is charged
  (the guard runs before the body is read; ``max_items`` bounds a request's cost).
* The handler refuses a ranking model on every other protocol's routes, and any other
  model here (422 naming ``model``).
* Errors have the native API's body; a feature store that can't answer is a 503 with
  ``Retry-After``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from modelgate.edge.deps import json_response, read_body
from modelgate.edge.ids import new_id
from modelgate.edge.worker_state import WorkerState
from modelgate.errors import ModelNotFound, error_response
from modelgate.inference.manifest import Task
from modelgate.inference.repository import ModelRepository
from modelgate.inference.runtime import LoadedModel
from modelgate.inference.service import Prediction, elapsed_ms
from modelgate.inference.validation import body_version, parse_json
from modelgate.observability.logging import request_id_var
from modelgate.observability.predlog import PredictionLog, Record
from modelgate.observability.timefmt import iso_utc
from modelgate.observability.tracing import recorded_trace_id
from modelgate.protocols.base import Decoded, Protocol, Route
from modelgate.ranking.features import FeaturesUnavailable
from modelgate.ranking.ranker import Assembled, Ranker, RankResult
from modelgate.shared.ratelimit import BATCH_SCOPE


@dataclass(frozen=True, slots=True)
class _Context:
    ranker: Ranker
    assembled: Assembled
    log: PredictionLog | None  # the worker's prediction log, for the request's line


def default_ranker(repository: ModelRepository) -> str:
    """The model ``/rank`` uses: the first ranking model by name."""
    for name in sorted(repository.models):
        model = repository.models[name].default
        if model is not None and model.manifest.task is Task.RANKING:
            return name
    raise ModelNotFound("no ranking model is served: POST /models/{name}/rank names one")


async def decode_rank(
    request: Request, worker: WorkerState, name: str | None, version: str | None
) -> Decoded:
    started = time.perf_counter()
    raw = await read_body(request, worker.settings.max_body_bytes)
    model = worker.repository.get(
        name or default_ranker(worker.repository), body_version(raw, version)
    )
    ranker = worker.ranker
    if model.manifest.task is not Task.RANKING:
        # The handler answers it (the same 422 as the other protocols' routes).
        return Decoded(model, np.empty((0, 0), np.float32), started)
    if ranker is None:
        raise FeaturesUnavailable("no feature store: the replica runs without redis_url")
    parsed = ranker.parse(model, parse_json(raw))
    assembled = await ranker.assemble(model, parsed)
    worker.metrics.observe_rank(
        model.name,
        model.version,
        ranker.plan(model.manifest).spec.feature_set,
        len(parsed.item_ids),
        assembled.fetch_ms / 1000,
    )
    context = _Context(ranker, assembled, worker.service.prediction_log)
    return Decoded(model, assembled.rows, started, context)


def encode_rank(decoded: Decoded, result: Prediction) -> Response:
    context: _Context = decoded.context
    model: LoadedModel = decoded.model
    scores = np.asarray(result.outputs).reshape(-1)  # request order
    ranked = context.ranker.finish(context.assembled, scores)
    request = context.assembled.request
    latency_ms = elapsed_ms(decoded.started)
    request_id = _request_id()
    defaults_used = {"user": ranked.user_default, "items": list(ranked.item_defaults)}
    if context.log is not None:
        context.log.append(
            _log_record(decoded, scores, ranked, latency_ms, request_id, defaults_used)
        )
    body: dict[str, Any] = {
        "user_id": request.user_id,
        "predictions": [
            {"item_id": item, "score": score, "rank": rank}
            for item, score, rank in zip(ranked.item_ids, ranked.scores, ranked.ranks, strict=True)
        ],
        "model_name": model.name,
        "model_version": model.version,
        "latency_ms": latency_ms,
        "timestamp": iso_utc(),
        "request_id": request_id,
        "defaults_used": defaults_used,
    }
    return json_response(
        body,
        raw=[
            (b"x-model-name", model.name.encode()),
            (b"x-model-version", model.version.encode()),
            (b"x-cache", b"HIT" if all(result.cached) else b"MISS"),
            (b"x-batch-size", b"%d" % result.batch_rows),
        ],
    )


def _log_record(
    decoded: Decoded,
    scores: np.ndarray,
    ranked: RankResult,
    latency_ms: float,
    request_id: str,
    defaults_used: dict[str, Any],
) -> Record:
    """The request's prediction-log line (predlog.py): items, scores and ranks in request
    order (rank 0: beyond ``top_k``)."""
    context: _Context = decoded.context
    request = context.assembled.request
    rank_of = dict(zip(ranked.item_ids, ranked.ranks, strict=True))
    return Record(
        ts=time.time(),
        request_id=request_id,
        manifest=decoded.model.manifest,
        rows=decoded.rows[:0],  # the line holds what it needs, not the rows
        outputs=[],
        cached=[],
        latency_ms=latency_ms,
        trace_id=recorded_trace_id(),
        ranking={
            "user_id": request.user_id,
            "item_ids": list(request.item_ids),
            "scores": scores.tolist(),
            "ranks": [rank_of.get(i, 0) for i in request.item_ids],
            "context": request.context,
            "defaults_used": defaults_used,
            "feature_versions": ranked.feature_versions,
        },
    )


def _rank(path: str, name: str, doc: str) -> Route:
    return Route(path, name, doc, BATCH_SCOPE, decode_rank, encode_rank)


PROTOCOL = Protocol(
    name="ranking",
    tag="rank",
    routes=(
        _rank("/rank", "rank", "Rank a user's candidate items with the default ranker."),
        _rank("/models/{name}/rank", "model_rank", "Rank with a named ranking model."),
        _rank("/models/{name}/versions/{version}/rank", "version_rank",
              "Rank with a specific version of a ranking model."),
    ),
    error=error_response,
    ranking=True,
)  # fmt: skip


def _request_id() -> str:
    """The request's id (the edge sets it, from ``X-Request-ID`` or new); a new one when
    called outside a request."""
    rid = request_id_var.get()
    return new_id() if rid == "-" else rid
