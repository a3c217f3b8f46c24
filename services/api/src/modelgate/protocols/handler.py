"""The one prediction handler: every protocol's every prediction route runs through it.

    guard (client key, then quota) → route.decode → PredictionService.run → route.encode

A model of the wrong task for the protocol (a ranker on /predict, a classifier on /rank)
is refused once decoded; so is a body past its quota class when it decodes to another
class than its route's (the native matrix form is charged to the batch quota too). The
facts of the access line (model, version, cache, batch rows) are noted in a typed
record on the request's scope, which the edge (``middleware.py``) writes out. A domain
error anywhere on the way is answered in the protocol's own error shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from modelgate.edge.guard import charge, guard
from modelgate.edge.worker_state import WorkerState, worker_state
from modelgate.errors import FieldError, InvalidInput, ModelGateError
from modelgate.inference.manifest import Task
from modelgate.inference.runtime import LoadedModel
from modelgate.protocols.base import Protocol, Route

_FACTS = "modelgate.facts"


@dataclass(frozen=True, slots=True)
class AccessFacts:
    """What a prediction adds to its access line."""

    model: str
    version: str
    cache: str  # "hit" when every row came from the cache, else "miss"
    batch_rows: int  # rows in the largest tensor call the request rode in (0: all cached)


def access_facts(scope: Scope) -> AccessFacts | None:
    """The facts a prediction noted, if the request was one that got that far."""
    return scope.get(_FACTS)


def wrong_task(model: LoadedModel, ranking_route: bool) -> InvalidInput:
    """A ranker asked on a prediction route, or another model on a rank route: 422."""
    reason = (
        f"{model.name} is a {model.manifest.task.value} model; rank routes serve ranking models"
        if ranking_route
        else f"{model.name} is a ranking model; use POST /models/{model.name}/rank"
    )
    return InvalidInput.for_fields([FieldError("model", reason)])


async def predict(
    protocol: Protocol, route: Route, request: Request, name: str | None, version: str | None
) -> Response:
    worker = worker_state(request)
    if worker.tracing is not None:  # the request's server span around all of it
        return await worker.tracing.request(
            request.scope, route.path, _predict(protocol, route, request, name, version, worker)
        )
    return await _predict(protocol, route, request, name, version, worker)


async def _predict(
    protocol: Protocol,
    route: Route,
    request: Request,
    name: str | None,
    version: str | None,
    worker: WorkerState,
) -> Response:
    try:
        quota_headers = await guard(request, worker, route.quota)
        decoded = await route.decode(request, worker, name, version)
        if (decoded.model.manifest.task is Task.RANKING) is not protocol.ranking:
            raise wrong_task(decoded.model, protocol.ranking)
        if decoded.quota is not None and decoded.quota != route.quota:
            quota_headers = await charge(request, worker, decoded.quota)
        result = await worker.service.run(decoded.model, decoded.rows)
        request.scope[_FACTS] = AccessFacts(
            result.model.name,
            result.model.version,
            "hit" if all(result.cached) else "miss",
            result.batch_rows,
        )
        response = route.encode(decoded, result)
    except ModelGateError as exc:
        return protocol.error(exc.status_code, exc.code, exc.message, exc.errors, exc.headers())
    if quota_headers is not None:
        response.raw_headers.extend(quota_headers)
    return response
