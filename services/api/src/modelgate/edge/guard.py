"""The guard in front of every prediction: the client's key, then its quota.

One function for every protocol's prediction routes (the handler, ``protocols/handler.py``,
calls it first). Admin routes have their own key (``auth.require_admin``).
"""

from __future__ import annotations

from starlette.requests import Request

from modelgate.edge.auth import check_client
from modelgate.edge.worker_state import WorkerState
from modelgate.errors import RateLimited
from modelgate.shared.ratelimit import client_identity

RawHeaders = list[tuple[bytes, bytes]]


async def guard(request: Request, worker: WorkerState, quota: str) -> RawHeaders | None:
    """Refuse (401/403 for the key, 429 for the quota) or let the request through; the
    ``X-RateLimit-*`` headers for its answer when quotas are on."""
    check_client(request, worker.settings)
    return await charge(request, worker, quota)


async def charge(request: Request, worker: WorkerState, quota: str) -> RawHeaders | None:
    """Count the request against one quota class: 429 past it; the ``X-RateLimit-*``
    headers when quotas are on."""
    quotas = worker.quotas
    if not quotas.enabled:
        return None
    keyed = bool(worker.settings.auth.api_key_sha256)
    if worker.tracing is None:
        verdict = await quotas.check(client_identity(request, keyed), quota)
    else:
        with worker.tracing.step("quota lookup", {"modelgate.quota": quota}):
            verdict = await quotas.check(client_identity(request, keyed), quota)
    if not verdict.allowed:
        worker.metrics.rate_limited.labels(quota).inc()
        raise RateLimited(
            f"rate limit exceeded: {verdict.limit}; "
            f"retry after {verdict.headers()['Retry-After']}s",
            verdict.headers(),
        )
    return verdict.raw_headers()
