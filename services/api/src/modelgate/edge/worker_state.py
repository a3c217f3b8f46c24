"""What one worker's lifespan builds, and the one way to reach it from a request.

The lifespan (``app.py``) builds a frozen ``WorkerState`` once and yields it as the
lifespan state; every route, dependency and the prediction handler reach it with
``worker_state(request)`` (the typed dependencies in ``deps.py`` are built on it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from modelgate.inference.repository import ModelRepository
    from modelgate.inference.service import PredictionService
    from modelgate.observability.metrics import Metrics
    from modelgate.observability.tracing import Tracing
    from modelgate.ranking.ranker import Ranker
    from modelgate.settings import Settings
    from modelgate.shared.control import FleetControl
    from modelgate.shared.ratelimit import Quotas

_KEY = "worker"


@dataclass
class Lifecycle:
    """Process facts for /health and /ready."""

    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)
    draining: bool = False  # set on SIGTERM: /ready answers 503 from then on

    def uptime_seconds(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)


@dataclass(frozen=True, slots=True)
class WorkerState:
    """Everything a request may use, built once per worker by the lifespan."""

    settings: Settings
    repository: ModelRepository
    service: PredictionService
    lifecycle: Lifecycle
    control: FleetControl
    quotas: Quotas
    metrics: Metrics
    ranker: Ranker | None = None  # the feature store's client; None without Redis
    tracing: Tracing | None = None  # None: tracing off (OTEL_*, settings.TracingSettings)

    def as_lifespan_state(self) -> dict[str, WorkerState]:
        return {_KEY: self}


def worker_state(conn: HTTPConnection) -> WorkerState:
    """The worker's state, for a request. From the ASGI scope directly: on every
    prediction, ``request.state`` would cost a property and a ``__getattr__``."""
    return conn.scope["state"][_KEY]  # type: ignore[no-any-return]
