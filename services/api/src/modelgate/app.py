"""The application factory. gunicorn runs ``modelgate.app:create_app()`` in each worker.

``create_app`` wires the HTTP side (routes, the prediction lane, the edge); the lifespan
(``worker_lifespan``) builds what a worker serves with — repository, inference thread,
service, fleet control, quotas — as one frozen ``WorkerState`` (``worker_state.py``), and
tunes the process for serving (``process.py``). Nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from modelgate import __version__
from modelgate.edge.accesslog import AccessLog
from modelgate.edge.cors import Cors
from modelgate.edge.lane import PredictionLane
from modelgate.edge.middleware import Edge, InFlight
from modelgate.edge.openapi import install_openapi
from modelgate.edge.process import drain_on_sigterm, settle_heap
from modelgate.edge.worker_state import Lifecycle, WorkerState
from modelgate.errors import ModelGateError, install_error_handlers
from modelgate.inference.follow import AliasFollower, initial_sync
from modelgate.inference.registry import MlflowRegistry, ModelRef
from modelgate.inference.repository import ModelRepository
from modelgate.inference.runtime import configure_torch, inference_executor, torch_thread_pool
from modelgate.inference.service import PredictionService
from modelgate.observability.drift import InputHistogram
from modelgate.observability.logging import configure_logging
from modelgate.observability.metrics import Metrics
from modelgate.observability.predlog import PredictionLog, Rotation
from modelgate.observability.tracing import Tracing
from modelgate.protocols import PROTOCOLS, error_shape
from modelgate.protocols.register import add_to_fastapi, lane_table
from modelgate.ranking.ranker import Ranker
from modelgate.routes import admin, health, models, observability, v1, v2
from modelgate.settings import Settings, TracingSettings
from modelgate.shared.cache import NullCache, PredictionCache
from modelgate.shared.control import FleetControl
from modelgate.shared.ratelimit import Quotas
from modelgate.shared.rediscache import RedisCache

log = logging.getLogger("modelgate.app")


def create_app(
    settings: Settings | None = None, tracing: TracingSettings | None = None
) -> ModelGateApp:
    settings = settings or Settings()
    tracing = tracing or TracingSettings()
    configure_logging(settings.log_level)
    # One registry per app (tests build several); with PROMETHEUS_MULTIPROC_DIR set the
    # values live in the replica's shared directory and /metrics merges every worker's.
    metrics = Metrics(CollectorRegistry(auto_describe=True))
    access_log = AccessLog()
    in_flight = InFlight()
    app = ModelGateApp(
        title="modelgate",
        version=__version__,
        description="Serve PyTorch models over HTTP: validated, batched, observable.",
        lifespan=functools.partial(
            worker_lifespan,
            settings=settings,
            metrics=metrics,
            access_log=access_log,
            in_flight=in_flight,
            tracing_settings=tracing,
        ),
        # Starlette answers "/health/" with a redirect built from the client's Host
        # header: an open redirect. A path is served as written, or 404.
        redirect_slashes=False,
    )
    # On app.state: what the framework-routed observability routes, the OpenAPI examples
    # and tests read; requests reach the worker's objects with ``worker_state``.
    app.state.repository = None
    app.state.metrics = metrics
    app.state.stats_history = deque()
    install_error_handlers(app, error_shape)
    for router in (health.router, models.router, v2.build_router(), v1.build_router()):
        app.include_router(router)
    # The prediction routes, from the protocols' tables: for FastAPI here (OpenAPI, the
    # docs), for the prediction lane below, which serves them.
    add_to_fastapi(app, PROTOCOLS)
    app.include_router(admin.router)
    app.include_router(observability.router)
    install_openapi(app, lambda: app.state.repository, settings.max_batch_instances)
    lane = PredictionLane(app.framework, app, lane_table(PROTOCOLS))
    # Only when configured: with CORS off, requests don't pass an extra layer at all.
    inner: ASGIApp = Cors(lane, settings.cors) if settings.cors.allow_origins else lane
    app.edge = Edge(inner, metrics, access_log, in_flight)
    return app


@asynccontextmanager
async def worker_lifespan(
    app: FastAPI,
    *,
    settings: Settings,
    metrics: Metrics,
    access_log: AccessLog,
    in_flight: InFlight,
    tracing_settings: TracingSettings,
) -> AsyncIterator[dict[str, Any]]:
    configure_torch(settings.torch_threads)
    # asyncio.to_thread's threads load models on a hot reload (warm-up, trace checks):
    # the same intra-op count as the inference thread (runtime.torch_thread_pool).
    asyncio.get_running_loop().set_default_executor(
        torch_thread_pool(settings.torch_threads, None, "worker")
    )
    lifecycle = Lifecycle()
    repository, follower_refs, mlflow = await load_repository(settings, metrics)
    publish_served(metrics, repository, settings.drift.enabled)
    # On app.state only for the OpenAPI examples and for tests; requests use worker_state.
    app.state.repository = repository
    app.state.lifecycle = lifecycle
    # One inference thread per worker: torch ops run serially in it, with
    # settings.torch_threads intra-op threads, while the event loop stays free.
    executor = inference_executor(settings.torch_threads)
    # Here, not in create_app: the span processor's export thread must start in the
    # worker, after gunicorn forked it.
    tracing = Tracing.from_settings(tracing_settings, settings.instance)
    service = PredictionService(
        repository,
        executor,
        settings.batching,
        cache=build_cache(settings, metrics),
        metrics=metrics,
        prediction_log=build_prediction_log(settings, metrics),
        in_flight=in_flight,
        count_inputs=settings.drift.enabled,
        tracing=tracing,
    )
    # Catch up with fleet-wide loads/unloads before serving, then follow them.
    control = FleetControl(
        repository,
        settings.redis_connection_url,
        settings.instance,
        on_change=lambda: publish_served(metrics, repository, settings.drift.enabled),
    )
    await control.start()
    follower = (
        AliasFollower(mlflow, follower_refs, repository, control, settings.mlflow.poll_seconds)
        if mlflow is not None and follower_refs
        else None
    )
    if follower is not None:
        await follower.start()
    quotas = Quotas(
        settings.rate_limit, settings.redis_connection_url, settings.cache.breaker_seconds
    )
    ranker = Ranker.from_settings(settings)
    if ranker is not None:
        ranker.store.on_lookup = metrics.count_feature_lookups
    drain_on_sigterm(lifecycle)
    settle_heap()
    log.info(
        "worker ready" if repository.ready() else "worker started without every model",
        extra={"models": {n: e.default_version for n, e in repository.models.items()}},
    )
    worker = WorkerState(
        settings, repository, service, lifecycle, control, quotas, metrics, ranker, tracing
    )
    try:
        yield worker.as_lifespan_state()
    finally:
        lifecycle.draining = True
        if follower is not None:
            await follower.stop()
        await control.stop()
        await quotas.close()
        if ranker is not None:
            await ranker.close()
        await service.close()
        executor.shutdown(wait=True)
        if tracing is not None:  # after the batchers: their last spans go out too
            await asyncio.to_thread(tracing.shutdown)
        access_log.flush()
        metrics.flush()


async def load_repository(
    settings: Settings, metrics: Metrics
) -> tuple[ModelRepository, list[ModelRef], MlflowRegistry | None]:
    """The repository with every wanted model loaded (a registry alias's version made the
    default), the aliases to follow and the registry client, if configured."""
    repository = ModelRepository(
        root=settings.model_repository,
        wanted=list(settings.models),
        pinned=dict(settings.pinned_versions),
        default_model_name=settings.default_model,
        on_load=lambda name, _v, ok: metrics.model_loads.labels(
            name, "success" if ok else "failure"
        ).inc(),
    )
    follower_refs, mlflow = _registry_source(settings)
    alias_versions = (
        await asyncio.to_thread(initial_sync, mlflow, follower_refs, repository)
        if mlflow is not None
        else {}
    )
    repository.load_all()
    for name, version in alias_versions.items():  # the alias decides, not the highest
        with contextlib.suppress(ModelGateError):
            repository.make_default(name, version)
    return repository, follower_refs, mlflow


class ModelGateApp(FastAPI):
    """FastAPI with modelgate's edge in front of FastAPI's own middleware stack.

    Every HTTP request enters ``edge`` first (request id, HTTP metrics, access line, see
    middleware.py), then the prediction lane (lane.py), which hands prediction requests to
    their endpoints and everything else to ``framework``: FastAPI as usual. In front
    rather than added with ``add_middleware`` because FastAPI's outer layers (server
    errors, telemetry, body limit) cost about a tenth of a prediction request, and the lane
    needs none of them.
    """

    edge: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.edge is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette does: request.app
        await self.edge(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def build_cache(settings: Settings, metrics: Metrics | None = None) -> PredictionCache:
    if not (settings.cache.enabled and settings.redis_url):
        return NullCache()
    cache = RedisCache.from_url(
        settings.redis_connection_url,
        ttl_seconds=settings.cache.ttl_seconds,
        timeout_s=settings.cache.timeout_ms / 1000,
        breaker_s=settings.cache.breaker_seconds,
        local_entries=settings.cache.local_entries,
    )
    if metrics is not None:
        cache.on_lookup = metrics.count_cache
    return cache


def build_prediction_log(settings: Settings, metrics: Metrics) -> PredictionLog | None:
    if settings.prediction_log.dir is None:
        return None
    return PredictionLog(
        settings.prediction_log.dir,
        settings.instance,
        max_queue=settings.prediction_log.max_queue,
        on_result=lambda result, n: metrics.prediction_log.labels(result).inc(n),
        max_queue_bytes=settings.prediction_log.max_queue_bytes,
        rotation=Rotation(
            rotate_s=settings.prediction_log.rotate_s,
            max_file_bytes=settings.prediction_log.max_file_bytes,
            max_total_bytes=settings.prediction_log.max_total_bytes,
        ),
    )


def _registry_source(settings: Settings) -> tuple[list[ModelRef], MlflowRegistry | None]:
    """The MLflow aliases this worker follows, and the registry client, if configured."""
    if not settings.mlflow.tracking_uri:
        return [], None
    refs = [ModelRef.parse(f"models:/{item}") for item in settings.mlflow.follow]
    registry = MlflowRegistry(settings.mlflow.tracking_uri, settings.mlflow.timeout_seconds)
    return refs, registry


def publish_served(metrics: Metrics, repository: ModelRepository, drift: bool) -> None:
    """What the metrics say is loaded: the versions, and (``drift``) the reference bins
    of those whose manifest has one, their counters at 0 before any row is counted."""
    metrics.served(served_versions(repository))
    if not drift:
        return
    for name, entry in repository.models.items():
        for version, model in entry.versions.items():
            if model.manifest.reference is not None:
                metrics.track_features(name, version, InputHistogram(model.manifest).features)


def served_versions(repository: ModelRepository) -> list[tuple[str, str, str, bool]]:
    return [
        (name, version, model.sha256, version == entry.default_version)
        for name, entry in repository.models.items()
        for version, model in entry.versions.items()
    ]
