"""What a wire format declares: its prediction routes, each with a decode and an encode,
and the shape of its error bodies.

A protocol module (``native.py``, ``v1.py``, ``v2.py``) holds one ``Protocol``: the
routes table is read twice, by the prediction lane (``lane.py``) and by FastAPI (for
OpenAPI and the docs), from ``register.py``; the prediction handler (``handler.py``) runs
every route the same way::

    guard (client key, then quota) → route.decode → PredictionService.run → route.encode

``decode`` reads the body and picks the model, in the order the protocol documents (the
native API reads the body first: a body may name the version); it raises a
``ModelGateError`` for anything wrong, which the protocol's ``error`` shapes; so do the
errors of any other route under the protocol's ``prefixes``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from modelgate.errors import ErrorShape
from modelgate.inference.runtime import LoadedModel

if TYPE_CHECKING:
    from modelgate.edge.worker_state import WorkerState
    from modelgate.inference.service import Prediction


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request's rows for one model version, and what its encoder needs besides."""

    model: LoadedModel
    rows: np.ndarray  # (n, n_features) float32, validated
    started: float  # perf_counter at the request's start, for latency fields
    context: Any = None  # the protocol's own: V1's columnar flag, V2's payload and outputs
    # A quota class the body is charged to besides the route's: the native matrix form
    # (many rows on a single route) is also counted by the batch quota.
    quota: str | None = None


# (request, worker state, model name or None, version or None) → Decoded
Decode = Callable[["Request", "WorkerState", str | None, str | None], Awaitable[Decoded]]
Encode = Callable[[Decoded, "Prediction"], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """One prediction route of a protocol."""

    path: str  # a template: {name} and {version} are the only parameters
    name: str  # the route's name (OpenAPI operation, url_for)
    doc: str  # its description in the docs
    quota: str  # the quota class it is charged to (ratelimit.PREDICT_SCOPE, BATCH_SCOPE)
    decode: Decode
    encode: Encode
    openapi_extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Protocol:
    """A wire format: its routes and its error shape."""

    name: str
    tag: str  # the OpenAPI tag of its routes
    routes: tuple[Route, ...]
    error: ErrorShape  # how it answers an error (errors.py)
    # Paths starting with these are this protocol's, framework-routed ones too (metadata,
    # health, a 404 or 405): their errors take its shape. Empty: the native API's shape.
    prefixes: tuple[str, ...] = ()
    # Its routes serve ranking models only (``ranking.py``); every other protocol's refuse
    # them: a ranker's rows come from the feature store, never from a request.
    ranking: bool = False
