"""Liveness, readiness and the service root.

``/health`` answers 200 while the process can serve HTTP at all (liveness: restart me if
this fails). ``/ready`` answers 200 only when every configured model is loaded and warmed
and the worker is not shutting down (readiness: send me traffic).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from modelgate import __version__
from modelgate.edge.deps import (
    ControlDep,
    LifecycleDep,
    RepositoryDep,
    ServiceDep,
    SettingsDep,
    json_response,
)
from modelgate.inference.repository import version_order

router = APIRouter(tags=["health"])


@router.get("/")
async def root(request: Request, settings: SettingsDep) -> Response:
    return json_response(
        {
            "name": "modelgate",
            "version": __version__,
            "instance": settings.instance,
            "links": {
                "docs": "/docs",
                "openapi": "/openapi.json",
                "health": "/health",
                "ready": "/ready",
                "models": "/models",
                "predict": "/predict",
                "batch": "/predict/batch",
            },
        }
    )


@router.get("/health")
async def health(
    repository: RepositoryDep,
    service: ServiceDep,
    lifecycle: LifecycleDep,
    settings: SettingsDep,
    control: ControlDep,
) -> Response:
    models = repository.models
    default_entry = models.get(repository.default_name)
    default = default_entry.default if default_entry else None
    last = service.last_prediction_at
    return json_response(
        {
            "status": "ok",
            # The tutorials' field: every configured model has a version loaded (what
            # /ready checks, which also turns 503 while the worker drains).
            "model_loaded": repository.ready(),
            "timestamp": datetime.now(UTC).isoformat(),
            "instance": settings.instance,
            "models_loaded": sum(len(e.versions) for e in models.values()),
            "models": {
                name: sorted(e.versions, key=version_order) for name, e in sorted(models.items())
            },
            "default_model": repository.default_name or None,
            "default_model_version": default.version if default else None,
            "loaded_at": default.loaded_at.isoformat() if default else None,
            "started_at": lifecycle.started_at.isoformat(),
            "uptime_seconds": lifecycle.uptime_seconds(),
            "last_prediction_at": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
            "queued_rows": service.queued_rows,
            # A count only: why a version was refused names files and digests, which is
            # for the log and for admin callers (POST /v2/repository/index).
            "load_failures": len(repository.failures),
            "control": control.following(),
        }
    )


@router.get("/ready")
async def ready(repository: RepositoryDep, lifecycle: LifecycleDep) -> Response:
    if lifecycle.draining:
        return json_response({"status": "draining"}, 503, {"Retry-After": "1"})
    if not repository.ready():
        missing = [
            n
            for n in repository.configured
            if n not in repository.models or repository.models[n].default is None
        ]
        return json_response(
            {"status": "not_ready", "models_not_loaded": missing or repository.configured},
            503,
            {"Retry-After": "1"},
        )
    return json_response(
        {
            "status": "ready",
            "models": {n: e.default_version for n, e in sorted(repository.models.items())},
        }
    )
